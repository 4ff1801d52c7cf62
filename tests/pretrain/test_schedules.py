"""Schedules at k = 0, K/2 and K, against hand-computed values."""

import pytest

from pretrain.engine.schedules import beta_at, lr_at, tau_at

K = 1000


@pytest.mark.parametrize(
    "step, expected", [(0, 0.4), (K // 2, 0.2), (K, 0.0), (K // 4, 0.4 * 0.5 * (2**-0.5 + 1))]
)
def test_beta_cosine(step, expected):
    assert beta_at(step, K, 0.4) == pytest.approx(expected, abs=1e-12)


def test_beta_constant():
    assert beta_at(0, K, 0.3, "constant") == beta_at(K, K, 0.3, "constant") == 0.3


@pytest.mark.parametrize("step, expected", [(0, 0.99), (K // 2, 0.995), (K, 1.0)])
def test_tau_cosine(step, expected):
    assert tau_at(step, K, 0.99) == pytest.approx(expected, abs=1e-12)


def test_tau_constant():
    assert tau_at(K // 2, K, 0.996, "constant") == 0.996


def test_lr_warmup_then_cosine():
    base, warmup = 2.0, 100
    assert lr_at(0, K, base, warmup) == pytest.approx(base / warmup)
    assert lr_at(49, K, base, warmup) == pytest.approx(base * 0.5)
    assert lr_at(warmup - 1, K, base, warmup) == pytest.approx(base)
    assert lr_at(warmup, K, base, warmup) == pytest.approx(base)
    assert lr_at(warmup + (K - warmup) // 2, K, base, warmup) == pytest.approx(base / 2)
    assert lr_at(K, K, base, warmup, min_lr=0.01) == pytest.approx(0.01)


def test_lr_without_warmup_starts_at_base():
    assert lr_at(0, K, 0.1) == pytest.approx(0.1)
    assert lr_at(K // 2, K, 0.1) == pytest.approx(0.05)
