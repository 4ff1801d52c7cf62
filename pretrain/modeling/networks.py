"""Networks: ResNet encoders (torchvision layer names), MLP heads, the online network and its target.

The encoder keeps torchvision's parameter names (conv1, bn1, layer1..4, downsample.0/1) so a
checkpoint converts to Detectron2 with a fixed key mapping. Two options torchvision lacks:
a CIFAR stem (3x3 conv, stride 1, no max-pool) for 32/64 px inputs, and a base width other
than 64 for fast CPU experiments.
"""

from __future__ import annotations

import copy
from typing import Dict, Tuple

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from pretrain.methods import method_of

ARCHITECTURES = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),  # for converting other projects' weights
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """A ResNet trunk whose forward returns the globally pooled features (no classifier)."""

    def __init__(
        self,
        depth: str = "resnet18",
        width: int = 64,
        stem: str = "imagenet",
        zero_init_residual: bool = True,
    ):
        super().__init__()
        block, layers = ARCHITECTURES[depth]
        self.stem = stem
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = width
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = width * 8 * block.expansion
        self._init_weights(zero_init_residual)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes,
                    planes * block.expansion,
                    kernel_size=1,
                    stride=stride,
                    bias=False,
                ),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """torchvision's initialisation (the CIFAR stem's conv1 excepted, as in the official code); optionally
        zero the last BN of each block (identity at start)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.stem == "cifar":
            # The official code swaps in the 3x3 conv1 after torchvision's init, so it keeps PyTorch's
            # default Conv2d init (kaiming-uniform, a = sqrt 5); so does ours (docs/FIDELITY.md).
            self.conv1.reset_parameters()
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward_stages(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Outputs of layer1..layer4 (Detectron2's res2..res5), used to verify conversions."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stages = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            stages[name] = x
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_stages(x)["layer4"]), 1)


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Linear (no bias on the last layer, as in the public MSR code)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim, bias=False),
    )


class OnlineNetwork(nn.Module):
    """Encoder f, projector g and predictor q; forward returns (projection g(f(x)), prediction q(g(f(x))))."""

    def __init__(self, encoder: ResNet, hidden_dim: int, out_dim: int):
        super().__init__()
        self.encoder = encoder
        self.projector = mlp_head(encoder.out_dim, hidden_dim, out_dim)
        self.predictor = mlp_head(out_dim, hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        projection = self.projector(self.encoder(x))
        return projection, self.predictor(projection)


class TargetNetwork(nn.Module):
    """The EMA copy of the online encoder and projector; it never receives gradients."""

    def __init__(self, online: OnlineNetwork):
        super().__init__()
        self.encoder = copy.deepcopy(online.encoder)
        self.projector = copy.deepcopy(online.projector)
        for param in self.parameters():
            param.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


def build_encoder(cfg) -> ResNet:
    return ResNet(cfg.MODEL.BACKBONE, cfg.MODEL.WIDTH, cfg.MODEL.STEM, cfg.MODEL.ZERO_INIT_RESIDUAL)


def build_networks(cfg) -> Tuple[OnlineNetwork, "TargetNetwork | None"]:
    """The online network and, for EMA methods, its target initialised as an exact copy."""
    online = OnlineNetwork(build_encoder(cfg), cfg.MODEL.HIDDEN_DIM, cfg.MODEL.OUT_DIM)
    target = TargetNetwork(online) if method_of(cfg).ema_target else None
    return online, target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameter by parameter (matching names).

    Buffers (BatchNorm running statistics) are not averaged: the target runs in train mode and
    keeps its own statistics, as in BYOL.
    """
    online_params = dict(online.named_parameters())
    target_params = [p for _, p in target.named_parameters()]
    sources = [online_params[name].detach() for name, _ in target.named_parameters()]
    torch._foreach_mul_(target_params, tau)
    torch._foreach_add_(target_params, sources, alpha=1.0 - tau)
