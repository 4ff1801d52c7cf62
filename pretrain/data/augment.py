"""Augmentations of MSR: the weak t1, the aggressive t2 and the multi-stage view builder.

MSR (Algorithm 1) draws two weak views v_w = t1(x), v'_w = t1'(x) and makes each aggressive
view FROM its own weak view: v_a = t2(v_w), v'_a = t2'(v'_w). So t2 holds only photometric
operations (colour jitter, grayscale, blur) and never changes geometry: a weak view and its
aggressive view share the same crop and flip. All randomness comes from torch's generator,
so ``torch.manual_seed`` makes a view reproducible and DataLoader workers get distinct streams.

Everything here works on PIL images with torchvision's v1 transforms, one image at a time
(each image gets its own random parameters). With ``AUG.AGGRESSIVE_ON "device"`` the loader runs
only t1 (:class:`WeakViewsUint8`) and the engine makes the aggressive views on the training device
(``pretrain/data/device_augment.py``).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from pretrain.methods import VIEW_LAYOUTS, view_layout


class GaussianBlur:
    """Blur a PIL image with a Gaussian whose sigma is drawn uniformly from ``sigma_range``.

    Same operation as MoCo v2 (PIL's ``GaussianBlur(radius=sigma)``), but the sigma is drawn
    from torch's generator instead of Python's ``random`` so one seed controls every view.
    """

    def __init__(self, sigma_range: Sequence[float] = (0.1, 2.0)):
        low, high = float(sigma_range[0]), float(sigma_range[1])
        if not 0 < low <= high:
            raise ValueError(f"GaussianBlur needs 0 < min <= max for sigma, got {sigma_range}")
        self.sigma_range = (low, high)

    def sample_sigma(self) -> float:
        """One sigma drawn uniformly from the range (inclusive of a degenerate [s, s] range)."""
        low, high = self.sigma_range
        return low + (high - low) * torch.rand(()).item()

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=self.sample_sigma()))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(sigma_range={self.sigma_range})"


class ToRGB:
    """Any PIL image as RGB (grayscale data sets such as Fashion-MNIST); an RGB image is returned as is."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


def weak_transform(cfg) -> Callable[[Image.Image], Image.Image]:
    """t1: random resized crop to DATA.IMAGE_SIZE and horizontal flip (PIL -> RGB PIL)."""
    return T.Compose(
        [
            ToRGB(),
            T.RandomResizedCrop(cfg.DATA.IMAGE_SIZE, scale=tuple(cfg.AUG.CROP_SCALE)),
            T.RandomHorizontalFlip(p=cfg.AUG.FLIP_PROB),
        ]
    )


def aggressive_transform(cfg) -> Callable[[Image.Image], Image.Image]:
    """t2: colour jitter, grayscale (kept 3-channel RGB) and Gaussian blur, each applied at random.

    Only photometric steps, so the output has the size and geometry of the input. A step whose
    probability is 0 is left out entirely, so with all probabilities 0 t2 is the identity.
    """
    aug = cfg.AUG
    steps = []
    if aug.JITTER_PROB > 0:
        steps.append(T.RandomApply([T.ColorJitter(*aug.JITTER)], p=aug.JITTER_PROB))
    if aug.GRAY_PROB > 0:
        steps.append(T.RandomGrayscale(p=aug.GRAY_PROB))
    if aug.BLUR_PROB > 0:
        steps.append(T.RandomApply([GaussianBlur(aug.BLUR_SIGMA)], p=aug.BLUR_PROB))
    return T.Compose(steps)


def chw_tensor(pixels: np.ndarray) -> torch.Tensor:
    """An HxW or HxWxC image array as a contiguous, writable (C, H, W) tensor of the same dtype (one copy)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(np.array(pixels.transpose(2, 0, 1), order="C"))


class NormalizedTensor:
    """PIL image -> float32 CHW tensor normalised with ``mean`` / ``std`` (given on the 0-1 scale).

    What ToTensor + Normalize compute, as (pixel - 255 mean) / (255 std) in two in-place operations
    on one contiguous copy (equal to float32 rounding, 5x faster at 32 px and 3x at 224 px on one
    core): every view of every image goes through it, so it is a large share of the loader's work.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = list(mean), list(std)
        self.offset = torch.tensor(self.mean).view(-1, 1, 1) * 255
        self.scale = 1 / (torch.tensor(self.std).view(-1, 1, 1) * 255)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return chw_tensor(np.asarray(img)).float().sub_(self.offset).mul_(self.scale)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(mean={self.mean}, std={self.std})"


def to_normalized_tensor(cfg) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> float32 CHW tensor, normalised with DATA.MEAN / DATA.STD."""
    return NormalizedTensor(cfg.DATA.MEAN, cfg.DATA.STD)


class MultiStageViews:
    """Turn one PIL image into the views of a training step, in the given layout (see VIEW_LAYOUTS).

    For each of the two views independently: ``w = weak(img)`` then ``a = aggressive(w)``, so an
    aggressive view is t2 of its own weak view (same crop and flip), and the two views have
    independent crops. Returns, each passed through ``finish``: ``(w1, w2, a1, a2)`` for
    "multi_stage", ``(a1, a2)`` for "aa" and ``(a1, w2)`` for "aw".
    """

    def __init__(
        self, weak: Callable, aggressive: Callable, finish: Callable, layout: str = "multi_stage"
    ):
        if layout not in VIEW_LAYOUTS:
            raise ValueError(f"layout must be one of {VIEW_LAYOUTS}, got {layout!r}")
        self.weak = weak
        self.aggressive = aggressive
        self.finish = finish
        self.layout = layout

    def _pair(self, img: Image.Image) -> Tuple[Image.Image, Image.Image]:
        """One weak view and the aggressive view made from it."""
        weak_view = self.weak(img)
        return weak_view, self.aggressive(weak_view)

    def __call__(self, img: Image.Image) -> tuple:
        w1, a1 = self._pair(img)
        if self.layout == "aw":  # the second view stays weak: no t2 drawn for it
            views = (a1, self.weak(img))
        else:
            w2, a2 = self._pair(img)
            views = (w1, w2, a1, a2) if self.layout == "multi_stage" else (a1, a2)
        return tuple(self.finish(view) for view in views)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(layout={self.layout},\n  weak={self.weak},\n"
            f"  aggressive={self.aggressive},\n  finish={self.finish})"
        )


CROP_RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of t1's RandomResizedCrop (torchvision's default)
CROP_ATTEMPTS = 10  # torchvision's number of tries before its centre-crop fallback


def sample_crop_box(
    width: int, height: int, scale: Sequence[float], draws: Sequence[float]
) -> Tuple[int, ...]:
    """(top, left, height, width) of a RandomResizedCrop, from 4 uniform [0, 1) numbers per attempt.

    torchvision's rule (area uniform in ``scale`` of the image, log aspect ratio uniform in
    CROP_RATIO, position uniform; up to CROP_ATTEMPTS tries, then a centre crop with the ratio
    clamped), with the randomness given up front so one generator call serves a whole view.
    """
    area = width * height
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for attempt in range(CROP_ATTEMPTS):
        u_area, u_ratio, u_top, u_left = draws[4 * attempt : 4 * attempt + 4]
        target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        ratio = math.exp(log_low + (log_high - log_low) * u_ratio)
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
    if width / height < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif width / height > CROP_RATIO[1]:
        w, h = int(round(height * CROP_RATIO[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class WeakViewsUint8:
    """The loader side of ``AUG.AGGRESSIVE_ON "device"``: two independent weak views as uint8 tensors.

    Each call draws two independent t1 views (own crop and flip) of one PIL image and returns
    them as ``(weak1, weak2)``, uint8 tensors of shape (C, H, W) with values 0-255: no float
    conversion and no normalisation, so a batch is 4x smaller than float32 to collate, pin and
    copy. The engine makes the aggressive views from them on the training device (batched t2
    with per-image parameters, ``pretrain/data/device_augment.py``) and normalises the weak views
    there. Every method gets these same two views: MSR and the "AW" modes use them as the weak
    views, BYOL/SimSiam "AA" only as the inputs of the two aggressive views.

    This is the loader's whole per-image work, so t1 is done here with one generator call per view
    (crop box and flip drawn together) and the flip on the array: the same distribution and, for
    a given box, the same pixels as ``weak_transform`` (crop, bilinear resize), at about a third of
    its cost on small images.
    """

    def __init__(self, size: int, scale: Sequence[float], flip_prob: float):
        self.size = size
        self.scale = tuple(scale)
        self.flip_prob = flip_prob

    @classmethod
    def from_config(cls, cfg) -> "WeakViewsUint8":
        return cls(cfg.DATA.IMAGE_SIZE, cfg.AUG.CROP_SCALE, cfg.AUG.FLIP_PROB)

    def view(self, img: Image.Image) -> torch.Tensor:
        """One weak view of ``img`` as a (C, H, W) uint8 tensor."""
        draws = torch.rand(4 * CROP_ATTEMPTS + 1).tolist()
        top, left, h, w = sample_crop_box(img.width, img.height, self.scale, draws)
        img = ToRGB()(img)
        pixels = np.asarray(
            img.crop((left, top, left + w, top + h)).resize((self.size, self.size), Image.BILINEAR)
        )
        return chw_tensor(pixels[:, ::-1] if draws[-1] < self.flip_prob else pixels)

    def __call__(self, img: Image.Image) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.view(img), self.view(img)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(size={self.size}, scale={self.scale}, flip_prob={self.flip_prob})"


def build_pretrain_transform(cfg) -> Union[MultiStageViews, WeakViewsUint8]:
    """The training transform of the configured method.

    ``AUG.AGGRESSIVE_ON "cpu"``: normalised float views in the method's layout (:func:`view_layout`).
    ``"device"``: always the two weak views as uint8 tensors (w1, w2) (:class:`WeakViewsUint8`); the
    engine makes the aggressive views on the device and arranges them in the same layout.
    """
    if cfg.AUG.AGGRESSIVE_ON == "device":
        return WeakViewsUint8.from_config(cfg)
    return MultiStageViews(
        weak_transform(cfg),
        aggressive_transform(cfg),
        to_normalized_tensor(cfg),
        layout=view_layout(cfg),
    )


def eval_transform(cfg, size: Optional[int] = None) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic resize + centre crop to ``size`` (default DATA.EVAL_SIZE, 0 meaning DATA.IMAGE_SIZE).

    ImageNet-sized inputs (>= 128 px) follow the usual 256/224 resize ratio before the centre
    crop; small inputs are resized straight to the crop size, which is a no-op at the native size
    (32 px CIFAR; STL-10 at EVAL_SIZE 96, as the official kNN monitor sees it). Linear evaluation
    passes DATA.IMAGE_SIZE: its classifier trains on crops of that size.
    """
    size = size or cfg.DATA.EVAL_SIZE or cfg.DATA.IMAGE_SIZE
    resize = round(size * 256 / 224) if size >= 128 else size
    return T.Compose([ToRGB(), T.Resize(resize), T.CenterCrop(size), to_normalized_tensor(cfg)])
