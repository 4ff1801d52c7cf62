"""Optimizers: LARS parameter groups and step, the batch-scaled SGD lr, the kernel implementations."""

import pytest
import torch
from torch import nn

from pretrain.config import get_default_config
from pretrain.engine.optim import build_optimizer, lars_param_groups
from pretrain.modeling.networks import OnlineNetwork, ResNet


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
