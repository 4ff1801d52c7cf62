"""The labelled subsets of semi-supervised fine-tuning: a seeded class-balanced fraction, or a list file.

``balanced_subset`` keeps ``fraction`` of every class (at least one image each), drawn with a seeded
permutation, so a 10% subset holds 10% of each class and the same seed gives the same images on any
machine. ``read_label_file`` reads the common ImageNet 1% / 10% split files (SimCLR's
``1percent.txt`` / ``10percent.txt``: one image file name per line, e.g. ``n01440764_10026.JPEG``),
and ``indices_of_names`` finds those images in a data set read from image folders.
"""

from __future__ import annotations

import os
from typing import List, Sequence

import numpy as np

from pretrain import UserError


class LabelSubsetError(UserError, ValueError):
    """A label fraction or label file that cannot be used; the message says why and what to do."""


def balanced_subset(labels: Sequence[int], fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``round(fraction * n_c)`` (at least 1) images of every class c."""
    if not 0 < fraction <= 1:
        raise LabelSubsetError(
            f"--label-fraction must be in (0, 1], got {fraction} (e.g. 0.01 or 0.1 for 1% or 10%)."
        )
    labels = np.asarray(labels)
    if labels.size == 0 or (labels < 0).any():
        raise LabelSubsetError(
            "Fine-tuning needs a label for every training image; this split has unlabelled ones."
        )
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        keep = max(1, int(round(fraction * len(members))))
        chosen.append(rng.permutation(members)[:keep])
    return np.sort(np.concatenate(chosen))


def read_label_file(path: str) -> List[str]:
    """The image names of a split file: one per line (blank lines and ``#`` comments skipped)."""
    if not os.path.isfile(path):
        raise LabelSubsetError(
            f"Label file '{path}' does not exist. Pass a text file with one image file name per line "
            f"(the format of the ImageNet 1% / 10% split files, e.g. n01440764_10026.JPEG)."
        )
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle]
    names = [name for name in names if name and not name.startswith("#")]
    if not names:
        raise LabelSubsetError(f"Label file '{path}' lists no image names.")
    return names


def indices_of_names(paths: Sequence[str], names: Sequence[str], source: str) -> np.ndarray:
    """Sorted indices of the images whose file name is in ``names``; every name must be found."""
    wanted = {os.path.basename(name) for name in names}
    found = {os.path.basename(path): index for index, path in enumerate(paths)}
    missing = sorted(wanted - set(found))
    if missing:
        examples = ", ".join(missing[:3])
        raise LabelSubsetError(
            f"{len(missing)} of the {len(wanted)} images in {source} are not in the training split "
            f"(e.g. {examples}). Check that DATA.ROOT holds the same data set the file was made for."
        )
    return np.sort(np.asarray([found[name] for name in wanted], dtype=np.int64))
