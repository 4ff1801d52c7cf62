"""Weighted k-nearest-neighbour classification on frozen features (the kNN monitor).

Features are L2-normalised; a query's k most cosine-similar memory items vote for their class
with weight exp(similarity / T) (k = 200, T = 0.1 by default, as in InstDisc / MoCo monitors).
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pretrain.config import config_from_yaml_text, load_config
from pretrain.data.datasets import num_classes
from pretrain.data.loaders import build_eval_loaders
from pretrain.engine.checkpoint import CheckpointError, load_checkpoint
from pretrain.modeling.networks import ResNet, build_encoder
from pretrain.utils import distributed as comm


@torch.no_grad()
def extract_features(
    encoder: nn.Module, loader: DataLoader, device: torch.device
) -> Tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised encoder features and labels for every item of ``loader`` (encoder in eval mode)."""
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    for images, targets in loader:
        out = encoder(images.to(device, non_blocking=True))
        feats.append(F.normalize(out.float(), dim=1).cpu())
        labels.append(targets)
    encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Predicted class of each query row; ``query`` and ``bank`` are L2-normalised feature rows."""
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, query.shape[0], chunk_size):
        sims = query[start : start + chunk_size] @ bank.T
        top_sims, top_idx = sims.topk(k, dim=1)
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def _gather(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Concatenate every process's part (on the device, as NCCL requires), back on the CPU."""
    return comm.all_gather_cat(tensor.to(device)).cpu() if comm.get_world_size() > 1 else tensor


def knn_top1(
    encoder: nn.Module,
    memory_loader: DataLoader,
    query_loader: DataLoader,
    num_classes: int,
    device: torch.device,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """kNN top-1 accuracy (percent) of ``query_loader`` against ``memory_loader`` features.

    With several processes each loader holds this process's share; features are gathered so every
    process classifies against the whole memory bank and counts the whole query set.
    """
    bank, bank_labels = (
        _gather(t, device) for t in extract_features(encoder, memory_loader, device)
    )
    query, query_labels = (
        _gather(t, device) for t in extract_features(encoder, query_loader, device)
    )
    predicted = knn_predict(query, bank, bank_labels, num_classes, k, temperature)
    return 100.0 * (predicted == query_labels).double().mean().item()


def knn_of_config(encoder: nn.Module, cfg, device: torch.device, loaders=None) -> float:
    """kNN top-1 of ``encoder`` on the labelled splits of cfg's data set, with cfg.KNN's k and T.

    ``loaders``: the (memory, query) loaders of :func:`build_eval_loaders`, when already built.
    """
    memory, query = loaders if loaders is not None else build_eval_loaders(cfg, device)
    return knn_top1(
        encoder, memory, query, num_classes(cfg), device, cfg.KNN.K, cfg.KNN.TEMPERATURE
    )


def load_encoder(checkpoint: dict, cfg, which: str = "online") -> ResNet:
    """The online (default) or EMA target encoder of a pretraining checkpoint."""
    state = checkpoint["model"] if which == "online" else checkpoint.get("target")
    if state is None:
        raise CheckpointError(
            f"This checkpoint has no {which} network (SimSiam runs have no EMA target); "
            f"use --which online."
        )
    encoder = build_encoder(cfg)
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return encoder


def knn_from_checkpoint(
    path: str, cfg_file: Optional[str] = None, opts: Iterable[str] = (), which: str = "online"
) -> float:
    """kNN top-1 of a checkpoint's encoder, on the data set named by its config (or ``cfg_file``).

    Run by several processes (torchrun / SLURM), each encodes its share of the images and the features
    are gathered, so the result equals one process's.
    """
    checkpoint = load_checkpoint(path)
    cfg = (
        load_config(cfg_file, opts)
        if cfg_file
        else config_from_yaml_text(checkpoint["config"], opts)
    )
    device = comm.resolve_device(cfg.DEVICE)  # with several processes: this process's GPU
    encoder = load_encoder(checkpoint, cfg, which).to(device)
    return knn_of_config(encoder, cfg, device)
