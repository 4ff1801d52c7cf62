"""Optimizers: SGD with weight decay on all parameters, or LARS with BYOL's exclusions."""

from __future__ import annotations

from typing import List

import torch
from timm.optim import Lars
from torch import nn

from pretrain.config import ConfigError, effective_lr


def lars_param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """Weights in one group; biases and normalisation parameters (1-d) in a group with weight_decay 0.

    timm's Lars applies the trust ratio only to groups whose weight_decay is non-zero, so the second
    group gets neither decay nor adaptation, as BYOL prescribes.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def kernel_arguments(impl: str, optimizer: str) -> dict:
    """Keyword arguments selecting the optimizer's kernels for SOLVER.OPTIMIZER_IMPL.

    "auto" leaves the choice to the optimizer (torch and timm use the multi-tensor "foreach" kernels on
    GPUs); "fused" (one kernel for all parameters) exists for SGD only; all give the same update up to
    float rounding.
    """
    if impl == "auto":
        return {}
    if impl == "fused":
        if optimizer != "sgd":
            raise ConfigError(
                "SOLVER.OPTIMIZER_IMPL fused exists only for SOLVER.OPTIMIZER sgd (timm's LARS has "
                "no fused kernel); use foreach or auto with lars."
            )
        return {"fused": True}
    return {"foreach": impl == "foreach"}


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer named by SOLVER.OPTIMIZER at the batch-scaled lr (the schedule sets it each step)."""
    lr = effective_lr(cfg)
    kernels = kernel_arguments(cfg.SOLVER.OPTIMIZER_IMPL, cfg.SOLVER.OPTIMIZER)
    if cfg.SOLVER.OPTIMIZER == "lars":
        return Lars(
            lars_param_groups(model, cfg.SOLVER.WEIGHT_DECAY),
            lr=lr,
            momentum=cfg.SOLVER.MOMENTUM,
            trust_coeff=cfg.SOLVER.LARS_TRUST_COEF,
            **kernels,
        )
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=lr, momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **kernels
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
