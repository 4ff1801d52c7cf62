"""The online linear probe: a linear classifier trained beside pretraining, on detached features.

With PROBE.ENABLED, every step also trains a linear layer (its own SGD optimizer, no schedule) on the
backbone features of the step's least-augmented view, with the training labels: the first weak view
of MSR's multi-stage layout, the weak view of BYOL-AW, the first view of BYOL-AA (that layout has no
weak view). The features come from a no-grad forward of the online encoder in eval mode, so nothing
reaches the encoder: no gradient, and no update of its BatchNorm statistics. It costs one extra
encoder forward of one view per step (no backward). The batch accuracy is logged as
``probe_train_top1``; with every kNN evaluation the probe is evaluated on the test split
(``probe_top1``). Its state is part of the checkpoint, so a resumed run continues it exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pretrain.utils import distributed as comm


def probe_view(views: Sequence[torch.Tensor], layout: str) -> torch.Tensor:
    """The least-augmented view of a step's prepared views (see pretrain.methods.VIEW_LAYOUTS)."""
    return views[1] if layout == "aw" else views[0]


@torch.no_grad()
def frozen_features(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled encoder features in eval mode, without gradient (the encoder's mode is restored)."""
    was_training = encoder.training
    encoder.eval()
    features = encoder(images).float()
    encoder.train(was_training)
    return features


def _counts(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(correct top-1 predictions, items) of a batch, as a float64 tensor that can be all-reduced."""
    correct = (logits.argmax(1) == labels).sum()
    return torch.stack([correct, torch.tensor(len(labels), device=labels.device)]).double()


class OnlineProbe:
    """A linear classifier on frozen features with its own SGD optimizer (gradients averaged over processes)."""

    def __init__(self, in_dim: int, num_classes: int, probe_cfg, device: torch.device):
        # features standardised by a BatchNorm without affine parameters (as MAE's linear probe), so one
        # PROBE.LR suits every encoder and every stage of training, whatever the features' scale
        self.head = nn.Sequential(
            nn.BatchNorm1d(in_dim, affine=False), nn.Linear(in_dim, num_classes)
        ).to(device)
        self.optimizer = torch.optim.SGD(
            self.head.parameters(),
            lr=probe_cfg.LR,
            momentum=probe_cfg.MOMENTUM,
            weight_decay=probe_cfg.WEIGHT_DECAY,
        )
        self.device = device

    def step(self, encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One SGD step on a batch; returns its top-1 (%) over all processes' images."""
        features = frozen_features(encoder, images)
        labels = labels.to(self.device, non_blocking=True)
        logits = self.head.train()(features)
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for param in self.head.parameters():
            param.grad = comm.all_reduce_mean(param.grad)
        self.optimizer.step()
        correct = comm.all_reduce_mean(_counts(logits.detach(), labels))
        return 100.0 * (correct[0] / correct[1]).item()

    @torch.no_grad()
    def evaluate(self, encoder: nn.Module, loader: DataLoader) -> float:
        """Top-1 (%) on ``loader`` (each process its share; the counts are summed over processes)."""
        counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        self.head.eval()
        for images, labels in loader:
            labels = labels.to(self.device, non_blocking=True)
            logits = self.head(frozen_features(encoder, images.to(self.device, non_blocking=True)))
            counts += _counts(logits, labels)
        self.head.train()
        counts = comm.all_reduce_mean(counts)
        return 100.0 * (counts[0] / counts[1]).item()

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
