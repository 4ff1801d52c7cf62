"""DataLoaders shared by pretraining, the kNN monitor and linear evaluation: seeded workers, process shares."""

from __future__ import annotations

import random
from typing import Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from pretrain.data.augment import eval_transform
from pretrain.data.datasets import build_eval_datasets
from pretrain.utils import distributed as comm


def seed_worker(worker_id: int) -> None:
    """Give numpy and python in each loader worker a seed derived from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    sampler=None,
    drop_last: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader with seeded workers, pinned memory on CUDA and persistent workers."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
    )


def process_share(dataset: Dataset) -> Dataset:
    """Every world_size-th item starting at this process's rank (the whole data set for one process)."""
    world = comm.get_world_size()
    return dataset if world == 1 else Subset(dataset, range(comm.get_rank(), len(dataset), world))


def build_eval_loaders(cfg, device: torch.device) -> Tuple[DataLoader, DataLoader]:
    """(memory, query) loaders over this process's share of the labelled train and held-out splits."""
    memory, query = build_eval_datasets(cfg, eval_transform(cfg))
    return tuple(
        make_loader(process_share(ds), cfg.KNN.BATCH_SIZE, cfg.DATA.NUM_WORKERS, device)
        for ds in (memory, query)
    )
