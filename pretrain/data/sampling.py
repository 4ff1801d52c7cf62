"""Sampling with per-image augmentation seeds, so a run's views do not depend on how it is executed.

Each item's random transform runs under a seed derived from (run seed, epoch, image index). The
views an image gets are then the same whatever the number of loader workers or processes, and a
resumed run sees the same views as an uninterrupted one.
"""

from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torch.utils.data import Dataset, DistributedSampler

_MASK = (1 << 63) - 1


def sample_seed(base_seed: int, epoch: int, index: int) -> int:
    """A deterministic 63-bit seed for one image in one epoch (a SplitMix64-style mix of the three numbers)."""
    x = (
        base_seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB
    ) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class SeededDistributedSampler(DistributedSampler):
    """A DistributedSampler that yields ``(index, seed)`` pairs for :class:`SeededTransformDataset`.

    :meth:`set_start` skips the first items of the epoch's order, so a run resumed mid-epoch sees
    exactly the images the interrupted run had not reached, without loading the others.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def set_start(self, num_items: int) -> None:
        """Begin this epoch at position ``num_items`` of this process's order (call after set_epoch)."""
        self.start = num_items

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for position, index in enumerate(super().__iter__()):
            if position >= self.start:
                yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return self.num_samples - self.start


class SeededTransformDataset(Dataset):
    """Wraps a dataset with a random transform: item ``(index, seed)`` is made under ``torch.manual_seed(seed)``.

    The global torch RNG of the calling process is restored afterwards.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]):
        index, seed = key
        generator = (
            torch.default_generator
        )  # what CPU transforms draw from (torch.random.fork_rng is 50x slower)
        saved = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(saved)
