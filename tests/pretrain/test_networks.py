"""Encoders (torchvision names and shapes, stems, width), heads, the EMA target and its update."""

import pytest
import torch
import torchvision
from torch import nn

from pretrain.config import get_default_config
from pretrain.modeling.networks import (
    OnlineNetwork,
    ResNet,
    TargetNetwork,
    build_networks,
    ema_update,
)


@pytest.mark.parametrize(
    "depth, builder",
    [("resnet18", torchvision.models.resnet18), ("resnet50", torchvision.models.resnet50)],
)
def test_standard_resnet_has_torchvision_names_and_shapes(depth, builder):
    ours = ResNet(depth, width=64, stem="imagenet").state_dict()
    reference = {k: v for k, v in builder().state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}


def test_cifar_stem_keeps_resolution_and_width_option():
    net = ResNet("resnet18", width=16, stem="cifar")
    assert net.conv1.kernel_size == (3, 3) and isinstance(net.maxpool, nn.Identity)
    stages = net.forward_stages(torch.randn(2, 3, 32, 32))
    assert stages["layer1"].shape == (2, 16, 32, 32) and stages["layer4"].shape == (2, 128, 4, 4)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, net.out_dim) and net.out_dim == 128


def test_zero_init_residual_makes_blocks_start_as_identity_branch():
    net = ResNet("resnet18", stem="cifar", zero_init_residual=True)
    assert all(
        block.bn2.weight.abs().sum() == 0 for layer in (net.layer1, net.layer4) for block in layer
    )


def test_heads_have_paper_sizes_and_last_layer_without_bias():
    online = OnlineNetwork(ResNet("resnet50", stem="imagenet"), hidden_dim=4096, out_dim=256)
    assert online.projector[0].in_features == 2048 and online.projector[0].out_features == 4096
    assert online.projector[3].out_features == 256 and online.projector[3].bias is None
    assert online.predictor[0].in_features == 256 and online.predictor[3].bias is None


def test_target_starts_equal_and_frozen():
    cfg = get_default_config()
    cfg.MODEL.WIDTH = 8
    online, target = build_networks(cfg)
    for (name, p_t), p_o in zip(
        target.named_parameters(),
        [dict(online.named_parameters())[n] for n, _ in target.named_parameters()],
    ):
        assert torch.equal(p_t, p_o) and not p_t.requires_grad
    cfg.METHOD.NAME = "simsiam_msr"
    assert build_networks(cfg)[1] is None


def test_ema_update_hand_computed():
    online = OnlineNetwork(ResNet("resnet18", width=4, stem="cifar"), 8, 4)
    target = TargetNetwork(online)
    with torch.no_grad():
        for p in target.parameters():
            p.fill_(0.0)
        for p in online.parameters():
            p.fill_(1.0)
    ema_update(target, online, tau=0.9)
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in target.parameters())
    assert all(torch.equal(p, torch.ones_like(p)) for p in online.parameters())
