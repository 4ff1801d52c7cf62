"""t2 (the aggressive augmentation) as batched tensor ops on the training device.

With ``AUG.AGGRESSIVE_ON "device"`` the loader sends only the two weak views, as uint8 tensors
(:class:`pretrain.data.augment.WeakViewsUint8`), and the engine makes the aggressive views here, on
whatever device the images are on (CPU or CUDA, same code, no host round trips, no Python loop
over images). Every image gets its OWN random parameters, drawn from the same distribution as the
CPU path (:func:`pretrain.data.augment.aggressive_transform`)::

    RandomApply(ColorJitter(b, c, s, h), p=JITTER_PROB)   # 4 ops in a random order per image
    RandomGrayscale(p=GRAY_PROB)                           # 3-channel luma
    RandomApply(GaussianBlur(sigma ~ U[BLUR_SIGMA]), p=BLUR_PROB)

(torchvision's v2 transforms applied to a batch share one parameter set across the batch; that is
not per-image augmentation, hence this module.)

The colour ops follow torchvision's functional ops on float tensors: brightness scales and clamps,
contrast blends with the mean of the image's grayscale, saturation blends with the grayscale, hue
rotates H in HSV, grayscale uses torchvision's luma weights (0.2989, 0.587, 0.114; PIL and ITU-R
601-2 use 0.299 for red, a difference below 1e-4 of the intensity range). The per-image op order is
kept batched: at each step, each op acts (masked) on the images whose order puts it there and the
other images pass through bit-exactly; the steps are aligned on each image's hue position so the
costly hue op runs once per batch (see ``_color_jitter``). The blur is an exact Gaussian (truncated at 3 sigma of
the configured maximum sigma: kernel size 2*ceil(3*sigma_max)+1), separable, reflect padding, as a
depthwise conv with one kernel per image. Where the CPU path differs by construction: it works on
uint8 PIL images (rounding after each op) and PIL's GaussianBlur approximates the Gaussian with
box filters; the parameter distributions are identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# torchvision's rgb_to_grayscale weights on tensors (PIL's "L" conversion uses 0.299 for red).
LUMA_WEIGHTS = (0.2989, 0.587, 0.114)

# Op indices in a per-image ``order`` row, as in torchvision's ColorJitter.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

Range = tuple[float, float]


def _factor_range(value: float | Sequence[float], name: str) -> Range | None:
    """ColorJitter's range for brightness/contrast/saturation: [max(0, 1-x), 1+x]; None when off."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} jitter must be >= 0, got {value}")
        low, high = max(0.0, 1.0 - float(value)), 1.0 + float(value)
    else:
        low, high = float(value[0]), float(value[1])
        if not 0 <= low <= high:
            raise ValueError(f"{name} jitter range must satisfy 0 <= min <= max, got {value}")
    # torchvision switches the op off when the range is the single point 1 (e.g. strength 0).
    return None if low == high == 1.0 else (low, high)


def _hue_range(value: float | Sequence[float]) -> Range | None:
    """ColorJitter's hue range: [-h, h] with 0 <= h <= 0.5; None when off."""
    if isinstance(value, (int, float)):
        if not 0 <= value <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], got {value}")
        low, high = -float(value), float(value)
    else:
        low, high = float(value[0]), float(value[1])
        if not -0.5 <= low <= high <= 0.5:
            raise ValueError(
                f"hue jitter range must satisfy -0.5 <= min <= max <= 0.5, got {value}"
            )
    return None if low == high == 0.0 else (low, high)


def _check_prob(p: float, name: str) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return p


def rgb_to_gray(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma, the same arithmetic as torchvision's rgb_to_grayscale."""
    r, g, b = images.unbind(dim=-3)
    return (LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b).unsqueeze(-3)


def adjust_hue_batched(images: Tensor, hue: Tensor) -> Tensor:
    """Shift the hue of each image by its own factor (B,) in [-0.5, 0.5]: torchvision's adjust_hue.

    torchvision converts RGB -> HSV, adds the factor to H (mod 1) and converts back. This is the same
    map in fewer passes: with M = max, m = min, C = M - m per pixel, the hue in sextants is
    H6 = (g - b) / C, 2 + (b - r) / C or 4 + (r - g) / C when the max is r, g or b (torchvision's
    tie-breaking), and HSV -> RGB gives channel n (5, 3, 1 for r, g, b) as
    M - C clamp(min(k, 4 - k), 0, 1) with k = (n + H6 + 6 hue) mod 6 (V S = C, so no S is needed).
    Gray pixels (C = 0) come back unchanged.
    """
    r, g, b = images.unbind(dim=-3)
    maxc = images.amax(dim=-3)
    cr = maxc - images.amin(dim=-3)
    inv = torch.reciprocal(cr.clamp_min(1e-30))  # C = 0 only where diff = 0 below
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    diff = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    offset = (~is_r).to(images.dtype).add_(~(is_r | is_g)).mul_(2.0)  # 0 (r), 2 (g), 4 (b)
    h6 = torch.addcmul(offset, diff, inv)  # (B, H, W), in [-1, 5]
    h6 = h6.add_((6.0 * hue.to(images.dtype)).view(-1, 1, 1)).unsqueeze(-3)
    # (5, 3, 1) made on the device (a torch.tensor() literal would be a host-to-device copy per call).
    n = torch.arange(5.0, 0.0, -2.0, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    k = torch.remainder(h6 + n, 6.0)  # (B, 3, H, W)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(maxc.unsqueeze(-3), cr.unsqueeze(-3), ramp, value=-1.0)


def gaussian_kernels1d(sigma: Tensor, kernel_size: int) -> Tensor:
    """(B,) sigmas -> (B, kernel_size) normalised 1-D Gaussians on integer offsets (torchvision's)."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, dtype=sigma.dtype, device=sigma.device)
    pdf = torch.exp(-0.5 * (x / sigma.clamp_min(1e-6).unsqueeze(-1)).pow(2))
    return pdf / pdf.sum(dim=-1, keepdim=True)


def gaussian_blur_batched(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur image i with a Gaussian of sigma[i]: separable depthwise conv, reflect padding.

    Equivalent (up to float rounding) to torchvision's gaussian_blur(img_i, [k, k], [s_i, s_i]).
    """
    b, c, height, width = images.shape
    pad = kernel_size // 2
    if pad >= min(height, width):
        raise ValueError(
            f"blur kernel of size {kernel_size} needs images larger than {pad} px "
            f"(reflect padding), got {height}x{width}"
        )
    kernel = gaussian_kernels1d(sigma.to(images.dtype), kernel_size)  # (B, K)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B*C, K)
    x = images.reshape(1, b * c, height, width)
    x = F.pad(x, [pad, pad, pad, pad], mode="reflect")
    x = F.conv2d(x, kernel.view(b * c, 1, kernel_size, 1), groups=b * c)  # vertical
    x = F.conv2d(x, kernel.view(b * c, 1, 1, kernel_size), groups=b * c)  # horizontal
    return x.reshape(b, c, height, width)


class DeviceAggressiveAugment(torch.nn.Module):
    """Batched t2 with per-image random parameters, on the images' device.

    ``forward(weak_uint8)`` turns a (B, 3, H, W) uint8 batch of weak views into normalised float
    aggressive views; ``normalize(weak_uint8)`` gives the normalised weak views themselves.
    ``sample_params`` / ``apply`` expose the two halves (parameters, then deterministic ops).
    Move the module to the training device (``.to(device)``) so the mean/std buffers live there;
    pass a ``torch.Generator`` on that device for reproducible draws (else torch's default one).
    """

    def __init__(
        self,
        jitter: Sequence = (0.4, 0.4, 0.4, 0.1),
        jitter_prob: float = 0.8,
        gray_prob: float = 0.2,
        blur_prob: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ):
        super().__init__()
        if len(jitter) != 4:
            raise ValueError(
                f"jitter needs 4 values (brightness, contrast, saturation, hue), got {jitter}"
            )
        self.brightness = _factor_range(jitter[0], "brightness")
        self.contrast = _factor_range(jitter[1], "contrast")
        self.saturation = _factor_range(jitter[2], "saturation")
        self.hue = _hue_range(jitter[3])
        self.jitter_prob = _check_prob(jitter_prob, "jitter_prob")
        self.gray_prob = _check_prob(gray_prob, "gray_prob")
        self.blur_prob = _check_prob(blur_prob, "blur_prob")
        low, high = float(blur_sigma[0]), float(blur_sigma[1])
        if not 0 < low <= high:
            raise ValueError(f"blur_sigma needs 0 < min <= max, got {blur_sigma}")
        self.blur_sigma = (low, high)
        # Static size from the configured maximum sigma: no data-dependent shapes, no host sync.
        self.kernel_size = 2 * math.ceil(3.0 * high) + 1
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values with std > 0, got {mean}, {std}")
        self.register_buffer(
            "mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1), persistent=False
        )

    @classmethod
    def from_config(cls, cfg) -> DeviceAggressiveAugment:
        aug = cfg.AUG
        return cls(
            jitter=list(aug.JITTER),
            jitter_prob=aug.JITTER_PROB,
            gray_prob=aug.GRAY_PROB,
            blur_prob=aug.BLUR_PROB,
            blur_sigma=list(aug.BLUR_SIGMA),
            mean=list(cfg.DATA.MEAN),
            std=list(cfg.DATA.STD),
        )

    # -- parameters ---------------------------------------------------------------------------

    def sample_params(
        self, batch_size: int, device=None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Independent parameters for each of ``batch_size`` images, as tensors on ``device``.

        Keys: jitter_applied, gray_applied, blur_applied (bool, (B,)); brightness, contrast,
        saturation (factors, (B,); 1.0 for an op switched off), hue ((B,); 0.0 when off),
        order ((B, 4) int64, a random permutation of 0..3 = brightness, contrast, saturation, hue
        per image, position 0 first), sigma ((B,)). Every value is drawn even when its op is not
        applied, so the number of draws does not depend on the data.
        """
        if device is None:
            device = generator.device if generator is not None else self.mean.device
        device = torch.device(device)

        def uniform(rng: Range | None, neutral: float) -> Tensor:
            u = torch.rand(batch_size, device=device, generator=generator)
            if rng is None:
                return torch.full_like(u, neutral)
            return rng[0] + (rng[1] - rng[0]) * u

        jitter_applied = (
            torch.rand(batch_size, device=device, generator=generator) < self.jitter_prob
        )
        brightness = uniform(self.brightness, 1.0)
        contrast = uniform(self.contrast, 1.0)
        saturation = uniform(self.saturation, 1.0)
        hue = uniform(self.hue, 0.0)
        order = torch.rand(batch_size, 4, device=device, generator=generator).argsort(dim=1)
        gray_applied = torch.rand(batch_size, device=device, generator=generator) < self.gray_prob
        blur_applied = torch.rand(batch_size, device=device, generator=generator) < self.blur_prob
        sigma = uniform(self.blur_sigma, self.blur_sigma[0])
        return {
            "jitter_applied": jitter_applied,
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
            "order": order,
            "gray_applied": gray_applied,
            "blur_applied": blur_applied,
            "sigma": sigma,
        }

    # -- deterministic ops --------------------------------------------------------------------

    def _blend_step(
        self, x: Tensor, params: dict[str, Tensor], op: Tensor, active: Tensor
    ) -> Tensor:
        """Each active image runs the blend op ``op[i]`` (brightness, contrast or saturation) now.

        The three are all blends ``f x + (1 - f) t`` (target t = 0, the mean of the grayscale, the
        grayscale; then clamp to [0, 1], as torchvision's ``_blend``), so one batched blend serves all
        three; inactive images, and images whose op here is the hue, get f = 1, which returns x
        bit-exactly.
        """
        factor = torch.ones((), dtype=x.dtype, device=x.device).expand(x.shape[0])
        target_is_mean = target_is_gray = None
        if self.brightness is not None:
            factor = torch.where(
                active & (op == BRIGHTNESS), params["brightness"].to(x.dtype), factor
            )
        if self.contrast is not None:
            target_is_mean = active & (op == CONTRAST)
            factor = torch.where(target_is_mean, params["contrast"].to(x.dtype), factor)
        if self.saturation is not None:
            target_is_gray = active & (op == SATURATION)
            factor = torch.where(target_is_gray, params["saturation"].to(x.dtype), factor)
        target = torch.zeros((), dtype=x.dtype, device=x.device)
        if target_is_mean is not None or target_is_gray is not None:
            gray = rgb_to_gray(x)
            if target_is_mean is not None:
                gray_mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
                target = torch.where(target_is_mean.view(-1, 1, 1, 1), gray_mean, target)
            if target_is_gray is not None:
                target = torch.where(target_is_gray.view(-1, 1, 1, 1), gray, target)
        f = factor.view(-1, 1, 1, 1)
        return torch.addcmul((1.0 - f) * target, f, x).clamp_(0.0, 1.0)  # f x + (1 - f) t

    def _color_jitter(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """ColorJitter with each image's own factors and op order, for images with jitter_applied.

        Without hue: 4 batched steps, step p runs each image's op at position p of its order. With
        hue (the costly op, through HSV) the steps are aligned on each image's hue position j so that
        every image's hue falls on the same step and is computed once for the whole batch: at step
        t = 0..6, image i runs the op at position t - 3 + j_i of its order (nothing when that is
        outside 0..3). Each image still runs its 4 ops in its own order; 6 blend steps and 1 hue step
        instead of 4 blend and 4 hue steps, with no data-dependent shapes.
        """
        applied = params["jitter_applied"]
        order = params["order"]
        has_blend = any(r is not None for r in (self.brightness, self.contrast, self.saturation))
        if self.hue is None:
            if has_blend:
                for position in range(4):
                    x = self._blend_step(x, params, order[:, position], applied)
            return x
        hue_position = order.argsort(dim=1)[:, HUE]  # inverse permutation
        for step in range(7):
            if step == 3:
                use_hue = applied.view(-1, 1, 1, 1)
                x = torch.where(use_hue, adjust_hue_batched(x, params["hue"]), x)
            elif has_blend:
                position = hue_position + (step - 3)
                inside = (position >= 0) & (position <= 3)
                op = order.gather(1, position.clamp(0, 3).unsqueeze(1)).squeeze(1)
                x = self._blend_step(x, params, op, applied & inside)
        return x

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """t2 with the given per-image parameters. images: float (B, 3, H, W) in [0, 1], any device.

        Returns the same shape and dtype, values in [0, 1]. Steps whose probability is 0 are left
        out, and images whose flags are False pass through bit-exactly. Computed in float32 with
        autocast off (the ops are cheap next to the network). On CUDA the blur conv follows cuDNN's
        TF32 setting, as torchvision's gaussian_blur does (differences ~1e-3, far below 1/255).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(
                f"apply() takes float images in [0, 1], got {images.dtype}; use forward() for uint8"
            )
        out_dtype = images.dtype
        with torch.autocast(device_type=images.device.type, enabled=False):
            x = images.float()
            if self.jitter_prob > 0:
                x = self._color_jitter(x, params)
            if self.gray_prob > 0:
                use_gray = params["gray_applied"].view(-1, 1, 1, 1)
                x = torch.where(use_gray, rgb_to_gray(x).expand_as(x), x)
            if self.blur_prob > 0:
                use_blur = params["blur_applied"].view(-1, 1, 1, 1)
                x = torch.where(
                    use_blur, gaussian_blur_batched(x, params["sigma"], self.kernel_size), x
                )
        return x.to(out_dtype)

    # -- the engine's entry points -------------------------------------------------------------

    @staticmethod
    def to_float(images: Tensor) -> Tensor:
        """uint8 0-255 -> float32 0-1 (as ToTensor); float images are returned as float32 unchanged."""
        if images.dtype == torch.uint8:
            return images.to(torch.float32).div_(255.0)
        return images.float()

    def normalize(self, images: Tensor) -> Tensor:
        """(x - mean) / std per channel; uint8 input is first scaled to [0, 1]. No augmentation."""
        x = self.to_float(images)
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        std = self.std.to(device=x.device, dtype=x.dtype)
        return (x - mean) / std

    def augment(self, weak: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 (or [0, 1] float) weak views -> aggressive views in [0, 1], not normalised."""
        x = self.to_float(weak)
        params = self.sample_params(x.shape[0], x.device, generator)
        return self.apply(x, params)

    def forward(self, weak: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 (B, 3, H, W) weak views on the device -> normalised float32 aggressive views."""
        return self.normalize(self.augment(weak, generator))

    def extra_repr(self) -> str:
        return (
            f"brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}, "
            f"hue={self.hue}, jitter_prob={self.jitter_prob}, gray_prob={self.gray_prob}, "
            f"blur_prob={self.blur_prob}, blur_sigma={self.blur_sigma}, kernel_size={self.kernel_size}"
        )
