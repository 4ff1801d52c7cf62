"""Encoders, heads, EMA update and optimizer parameter groups."""

import pytest
import torch
import torchvision
from torch import nn

from pretrain.config import get_default_config
from pretrain.engine.optim import build_optimizer, lars_param_groups
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


def test_lars_groups_exclude_biases_and_norms():
    net = OnlineNetwork(ResNet("resnet18", width=8, stem="cifar"), 16, 8)
    decay, no_decay = lars_param_groups(net, 1e-6)
    names = {id(p): n for n, p in net.named_parameters()}
    assert decay["weight_decay"] == 1e-6 and no_decay["weight_decay"] == 0.0
    assert all(
        names[id(p)].endswith("bias")
        or ".bn" in names[id(p)]
        or "projector.1" in names[id(p)]
        or "predictor.1" in names[id(p)]
        or "downsample.1" in names[id(p)]
        for p in no_decay["params"]
    )
    assert all(p.ndim > 1 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_lars_step_adapts_weights_only():
    """One LARS step, hand-computed: trust ratio eta |w| / (|g| + wd |w|) on weights; plain SGD on biases."""
    cfg = get_default_config()
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.LARS_TRUST_COEF = "lars", 0.1, 0.001
    cfg.SOLVER.BASE_LR, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.REFERENCE_BATCH = 1.0, 256, 256
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
        layer.bias.fill_(1.0)
    layer.weight.grad = torch.tensor([[0.0, 1.0]])
    layer.bias.grad = torch.tensor([0.5])
    build_optimizer(cfg, layer).step()
    ratio = 0.001 * 5.0 / (1.0 + 0.1 * 5.0)
    expected_w = torch.tensor([[3.0, 4.0]]) - ratio * (
        torch.tensor([[0.0, 1.0]]) + 0.1 * torch.tensor([[3.0, 4.0]])
    )
    assert torch.allclose(layer.weight, expected_w, atol=1e-7)
    assert torch.allclose(layer.bias, torch.tensor([0.5]), atol=1e-7)


def test_sgd_uses_batch_scaled_lr():
    cfg = get_default_config()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.BATCH_SIZE = 0.2, 512
    optimizer = build_optimizer(cfg, nn.Linear(2, 2))
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0][
        "lr"
    ] == pytest.approx(0.4)


def _two_steps(optimizer_name: str, impl: str) -> torch.Tensor:
    """Weights of a small layer after two optimizer steps with the given kernels (fixed data and init)."""
    cfg = get_default_config()
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.OPTIMIZER_IMPL = optimizer_name, impl
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4))
    optimizer = build_optimizer(cfg, model)
    data = torch.randn(16, 8)
    for _ in range(2):
        optimizer.zero_grad()
        model(data).pow(2).mean().backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize(
    "optimizer_name, impls", [("sgd", ("foreach", "fused", "auto")), ("lars", ("foreach", "auto"))]
)
def test_optimizer_kernels_give_the_for_loop_update(optimizer_name, impls):
    reference = _two_steps(optimizer_name, "for_loop")
    torch.manual_seed(0)
    initial = torch.cat(
        [
            p.detach().flatten()
            for p in nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4)).parameters()
        ]
    )
    assert (reference - initial).abs().max() > 1e-3  # the steps moved the weights
    for impl in impls:
        torch.testing.assert_close(
            _two_steps(optimizer_name, impl), reference, rtol=1e-6, atol=1e-6
        )


def test_fused_lars_is_refused_with_the_alternative():
    from pretrain.config import ConfigError

    cfg = get_default_config()
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.OPTIMIZER_IMPL = "lars", "fused"
    with pytest.raises(ConfigError, match="foreach or auto"):
        build_optimizer(cfg, nn.Linear(2, 2))
