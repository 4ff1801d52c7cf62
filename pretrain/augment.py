"""Augmentations of MSR: the weak t1, the aggressive t2 and the multi-stage view builder.

MSR (Algorithm 1) draws two weak views v_w = t1(x), v'_w = t1'(x) and makes each aggressive
view FROM its own weak view: v_a = t2(v_w), v'_a = t2'(v'_w). So t2 holds only photometric
operations (colour jitter, grayscale, blur) and never changes geometry: a weak view and its
aggressive view share the same crop and flip. All randomness comes from torch's generator,
so ``torch.manual_seed`` makes a view reproducible and DataLoader workers get distinct streams.

Everything here works on PIL images with torchvision's v1 transforms, one image at a time
(each image gets its own random parameters). With ``AUG.AGGRESSIVE_ON "device"`` the loader runs
only t1 (:class:`WeakViewsUint8`) and the engine makes the aggressive views on the training device
(``pretrain/device_augment.py``).
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple, Union

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T
from torchvision.transforms import functional as TF

# Methods whose target branch may also see aggressive views ("AA" ablation of Table 1).
_METHODS_WITH_VIEW_CHOICE = ("byol", "simsiam")


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


def weak_transform(cfg) -> Callable[[Image.Image], Image.Image]:
    """t1: random resized crop to DATA.IMAGE_SIZE and horizontal flip (PIL -> PIL)."""
    return T.Compose([
        T.RandomResizedCrop(cfg.DATA.IMAGE_SIZE, scale=tuple(cfg.AUG.CROP_SCALE)),
        T.RandomHorizontalFlip(p=cfg.AUG.FLIP_PROB),
    ])


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


def to_normalized_tensor(cfg) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> float32 CHW tensor in [0, 1], then normalised with DATA.MEAN / DATA.STD."""
    return T.Compose([T.ToTensor(), T.Normalize(mean=list(cfg.DATA.MEAN), std=list(cfg.DATA.STD))])


class MultiStageViews:
    """Turn one PIL image into the views of a training step.

    For each of the two views independently: ``w = weak(img)`` then ``a = aggressive(w)``, so
    an aggressive view is t2 of its own weak view (same crop and flip). Returns
    ``(finish(w1), finish(w2), finish(a1), finish(a2))`` when ``return_weak`` is true, else
    ``(finish(a1), finish(a2))`` (the BYOL/SimSiam "AA" ablation, which needs no weak views).
    """

    def __init__(self, weak: Callable, aggressive: Callable, finish: Callable, return_weak: bool = True):
        self.weak = weak
        self.aggressive = aggressive
        self.finish = finish
        self.return_weak = bool(return_weak)

    def _pair(self, img: Image.Image) -> Tuple[Image.Image, Image.Image]:
        """One weak view and the aggressive view made from it."""
        weak_view = self.weak(img)
        return weak_view, self.aggressive(weak_view)

    def __call__(self, img: Image.Image) -> tuple:
        w1, a1 = self._pair(img)
        w2, a2 = self._pair(img)
        views = (w1, w2, a1, a2) if self.return_weak else (a1, a2)
        return tuple(self.finish(view) for view in views)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(return_weak={self.return_weak},\n  weak={self.weak},\n"
                f"  aggressive={self.aggressive},\n  finish={self.finish})")


class WeakViewsUint8:
    """The loader side of ``AUG.AGGRESSIVE_ON "device"``: two independent weak views as uint8 tensors.

    Each call draws two independent t1 views (own crop and flip) of one PIL image and returns
    them as ``(weak1, weak2)``, uint8 tensors of shape (C, H, W) with values 0-255: no float
    conversion and no normalisation, so a batch is 4x smaller than float32 to collate, pin and
    copy. The engine makes the aggressive views from them on the training device (batched t2
    with per-image parameters, ``pretrain/device_augment.py``) and normalises the weak views
    there. Every method gets these same two views: MSR and the "AW" modes use them as the weak
    views, BYOL/SimSiam "AA" only as the inputs of the two aggressive views.
    """

    def __init__(self, weak: Callable[[Image.Image], Image.Image]):
        self.weak = weak

    def __call__(self, img: Image.Image) -> Tuple[torch.Tensor, torch.Tensor]:
        weak1 = TF.pil_to_tensor(self.weak(img))
        weak2 = TF.pil_to_tensor(self.weak(img))
        return weak1, weak2

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(weak={self.weak})"


def needs_weak_views(cfg) -> bool:
    """False only for BYOL/SimSiam with aggressive views on both branches (METHOD.VIEWS "AA")."""
    return not (cfg.METHOD.NAME in _METHODS_WITH_VIEW_CHOICE and cfg.METHOD.VIEWS == "AA")


def build_pretrain_transform(cfg) -> Union[MultiStageViews, WeakViewsUint8]:
    """The training transform of the configured method.

    ``AUG.AGGRESSIVE_ON "cpu"``: normalised float views, 4 (w1, w2, a1, a2) or 2 (a1, a2) for
    BYOL/SimSiam "AA". ``"device"``: always the two weak views as uint8 tensors (w1, w2)
    (:class:`WeakViewsUint8`); the engine makes the aggressive views on the device.
    """
    if cfg.AUG.AGGRESSIVE_ON == "device":
        return WeakViewsUint8(weak_transform(cfg))
    return MultiStageViews(weak_transform(cfg), aggressive_transform(cfg), to_normalized_tensor(cfg),
                           return_weak=needs_weak_views(cfg))


def eval_transform(cfg) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic resize + centre crop for kNN and linear evaluation.

    ImageNet-sized inputs (>= 128 px) follow the usual 256/224 resize ratio before the centre
    crop; small inputs are resized straight to the crop size (for 32 px CIFAR this is a no-op).
    """
    size = cfg.DATA.IMAGE_SIZE
    resize = round(size * 256 / 224) if size >= 128 else size
    return T.Compose([T.Resize(resize), T.CenterCrop(size), to_normalized_tensor(cfg)])
