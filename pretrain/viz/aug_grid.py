"""A picture of MSR's multi-stage views: original | weak 1 | aggressive 1 | weak 2 | aggressive 2.

It draws the views with the project's own transforms, so the picture shows what training sees: t1 =
:func:`pretrain.data.augment.weak_transform` (crop and flip), t2 = :func:`pretrain.data.augment.aggressive_transform`
applied to the OUTPUT of t1 (:class:`pretrain.data.augment.MultiStageViews`), hence each aggressive view shares
the crop of the weak view to its left. With ``AUG.AGGRESSIVE_ON "device"`` the loader makes only the weak
views (:class:`pretrain.data.augment.WeakViewsUint8`) and the aggressive ones come from the batched
:class:`pretrain.data.device_augment.DeviceAggressiveAugment`, run here on the CPU. One seed fixes every draw,
and the caller's random state is left untouched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from pretrain.data.augment import (
    MultiStageViews,
    WeakViewsUint8,
    aggressive_transform,
    weak_transform,
)
from pretrain.data.datasets import build_pretrain_dataset
from pretrain.data.device_augment import DeviceAggressiveAugment
from pretrain.utils.errors import UserError

COLUMNS = (
    "original",
    "weak view 1\nt1(x)",
    "aggressive view 1\nt2(weak 1)",
    "weak view 2\nt1'(x)",
    "aggressive view 2\nt2'(weak 2)",
)
DEFAULT_OUT = os.path.join("output", "aug_grid.png")
CELL_IN = 1.5  # inches per image cell
DPI = 100  # so a cell is 150 px: a 32 px digit is upscaled about 4.7x


@dataclass
class GridViews:
    """The images of the grid: ``rows[i]`` = the 5 columns of image ``indices[i]``, uint8 HxWx3 arrays."""

    rows: list[list[np.ndarray]]
    indices: list[int]
    labels: list[int]
    on_device: bool


def _as_array(image: Image.Image) -> np.ndarray:
    """PIL image -> uint8 HxWx3 array."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _chw_to_array(image: torch.Tensor) -> np.ndarray:
    """uint8 (3, H, W) tensor -> uint8 HxWx3 array."""
    return image.permute(1, 2, 0).contiguous().numpy()


def pick_indices(num_available: int, num_images: int) -> list[int]:
    """Evenly spaced image indices, so a dataset stored class by class shows several classes."""
    if num_images < 1:
        raise UserError(f"the number of images must be at least 1, got {num_images}")
    count = min(num_images, num_available)
    return [int(i) for i in np.linspace(0, num_available - 1, count).round()]


def _cpu_rows(cfg, originals: Sequence[Image.Image]) -> list[list[np.ndarray]]:
    """The CPU path of training: MultiStageViews gives (w1, w2, a1, a2) with a_k = t2(w_k)."""
    views = MultiStageViews(
        weak_transform(cfg), aggressive_transform(cfg), _as_array, layout="multi_stage"
    )
    rows = []
    for image in originals:
        w1, w2, a1, a2 = views(image)
        rows.append([_as_array(image), w1, a1, w2, a2])
    return rows


def _device_rows(cfg, originals: Sequence[Image.Image], seed: int) -> list[list[np.ndarray]]:
    """The device path: uint8 weak views from the loader transform, then one batched t2 on the CPU."""
    weak = WeakViewsUint8.from_config(cfg)
    pairs = [weak(image) for image in originals]
    batch = torch.stack([view for pair in pairs for view in pair])  # (2N, 3, H, W)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        aggressive = DeviceAggressiveAugment.from_config(cfg).augment(batch, generator)
    aggressive = aggressive.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    rows = []
    for i, image in enumerate(originals):
        w1, w2 = pairs[i]
        a1, a2 = aggressive[2 * i], aggressive[2 * i + 1]
        rows.append([_as_array(image)] + [_chw_to_array(v) for v in (w1, a1, w2, a2)])
    return rows


def grid_views(cfg, num_images: int = 8, seed: int = 0) -> GridViews:
    """The original and the four views of ``num_images`` training images, reproducible from ``seed``.

    Reads the pretraining set of the config (``build_pretrain_dataset(cfg, None)`` gives PIL images)
    and follows ``AUG.AGGRESSIVE_ON`` as training does. Torch's global random state is forked, so a
    caller's seeded run is not disturbed.
    """
    dataset = build_pretrain_dataset(cfg, None)
    indices = pick_indices(len(dataset), num_images)
    items = [dataset[i] for i in indices]
    originals = [image.convert("RGB") for image, _ in items]
    on_device = cfg.AUG.AGGRESSIVE_ON == "device"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rows = _device_rows(cfg, originals, seed) if on_device else _cpu_rows(cfg, originals)
    return GridViews(
        rows=rows, indices=indices, labels=[int(label) for _, label in items], on_device=on_device
    )


def _interpolation(image: np.ndarray) -> str:
    """Nearest for images smaller than a cell (keeps small digits crisp), antialiased for large ones."""
    return "nearest" if max(image.shape[:2]) <= CELL_IN * DPI else "antialiased"


def _row_label(index: int, label: int) -> str:
    """Image index in the training set, and its label when it has one (STL-10's unlabeled images: -1)."""
    return f"#{index}" + (f"\nlabel {label}" if label >= 0 else "")


def _title(cfg, grid: GridViews) -> str:
    where = (
        "aggressive views: DeviceAggressiveAugment (AUG.AGGRESSIVE_ON device), computed on the CPU"
        if grid.on_device
        else "aggressive views: PIL transforms on the CPU (AUG.AGGRESSIVE_ON cpu)"
    )
    return f"{cfg.DATA.NAME}, {cfg.METHOD.NAME}: t2 acts on the output of t1\n{where}"


def _figure(cfg, grid: GridViews) -> Figure:
    """One row per image, one column per view, column titles on top."""
    rows, cols = len(grid.rows), len(COLUMNS)
    fig = Figure(figsize=(CELL_IN * cols, CELL_IN * rows + 0.9), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, images in enumerate(grid.rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image, interpolation=_interpolation(image))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=8)
        axes[r, 0].set_ylabel(_row_label(grid.indices[r], grid.labels[r]), fontsize=8)
    fig.suptitle(_title(cfg, grid), fontsize=9)
    return fig


def augmentation_grid(cfg, num_images: int = 8, out_path: str = DEFAULT_OUT, seed: int = 0) -> str:
    """Write the grid of :func:`grid_views` as a PNG (its folder is created) and return the path."""
    grid = grid_views(cfg, num_images, seed)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    _figure(cfg, grid).savefig(out_path, format="png")
    return out_path
