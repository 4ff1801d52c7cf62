"""Evaluation entry points shared by the trainer and tools/knn.py: loaders, encoder loading, kNN."""

from __future__ import annotations

import random
from typing import Iterable, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from . import distributed as comm
from .augment import eval_transform
from .checkpoint import CheckpointError, load_checkpoint
from .config import config_from_yaml_text, load_config
from .data import build_eval_datasets, num_classes
from .knn import knn_top1
from .model import ResNet, build_encoder


def seed_worker(worker_id: int) -> None:
    """Give numpy and python in each loader worker a seed derived from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset, batch_size: int, num_workers: int, device: torch.device, sampler=None,
                drop_last: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader with seeded workers, pinned memory on CUDA and persistent workers."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last, persistent_workers=num_workers > 0,
                      worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(seed))


def process_share(dataset: Dataset) -> Dataset:
    """Every world_size-th item starting at this process's rank (the whole data set for one process)."""
    world = comm.get_world_size()
    return dataset if world == 1 else Subset(dataset, range(comm.get_rank(), len(dataset), world))


def build_eval_loaders(cfg, device: torch.device) -> Tuple[DataLoader, DataLoader]:
    """(memory, query) loaders over this process's share of the labelled train and held-out splits."""
    memory, query = build_eval_datasets(cfg, eval_transform(cfg))
    return tuple(make_loader(process_share(ds), cfg.KNN.BATCH_SIZE, cfg.DATA.NUM_WORKERS, device)
                 for ds in (memory, query))


def load_encoder(checkpoint: dict, cfg, which: str = "online") -> ResNet:
    """The online (default) or EMA target encoder of a pretraining checkpoint."""
    state = checkpoint["model"] if which == "online" else checkpoint.get("target")
    if state is None:
        raise CheckpointError(f"This checkpoint has no {which} network (SimSiam runs have no EMA target); "
                              f"use --which online.")
    encoder = build_encoder(cfg)
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return encoder


def knn_from_checkpoint(path: str, cfg_file: Optional[str] = None, opts: Iterable[str] = (),
                        which: str = "online") -> float:
    """kNN top-1 of a checkpoint's encoder, on the data set named by its config (or ``cfg_file``).

    Run by several processes (torchrun / SLURM), each encodes its share of the images and the features
    are gathered, so the result equals one process's.
    """
    checkpoint = load_checkpoint(path)
    cfg = load_config(cfg_file, opts) if cfg_file else config_from_yaml_text(checkpoint["config"], opts)
    device = comm.resolve_device(cfg.DEVICE)  # with several processes: this process's GPU
    encoder = load_encoder(checkpoint, cfg, which).to(device)
    memory_loader, query_loader = build_eval_loaders(cfg, device)
    return knn_top1(encoder, memory_loader, query_loader, num_classes(cfg), device, cfg.KNN.K, cfg.KNN.TEMPERATURE)
