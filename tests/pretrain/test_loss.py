"""The loss of eq. 5 (pretrain.methods.loss) against hand-computed values and gradients."""

import math

import pytest
import torch

from pretrain.methods import msr_loss, normalized_mse

SQRT2 = math.sqrt(2.0)


def _vectors():
    q1 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    q2 = torch.tensor([[0.0, 1.0]], requires_grad=True)
    z1 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[1.0, 1.0]], requires_grad=True)
    return q1, q2, z1, z2


def test_value_matches_hand_computation():
    q1, q2, z1, z2 = _vectors()
    # mse(q1, z2) = 2 - 2/sqrt(2); mse(q2, z1) = 2; mse(q1, q2) = mse(q2, q1) = 2
    expected = 0.75 * ((2 - SQRT2) + 2) + 0.25 * (2 + 2)
    assert msr_loss(q1, q2, z1, z2, beta=0.25).loss.item() == pytest.approx(expected, abs=1e-6)


def test_batch_is_averaged():
    q1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    q2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    z1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    z2 = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    # row 1: weak = (2 - sqrt2) + 2, aa = 4 ; row 2: weak = 4 + 0, aa = 0
    _, weak, aa = msr_loss(q1, q2, z1, z2, beta=0.5)
    assert weak.item() == pytest.approx(((4 - SQRT2) + 4) / 2, abs=1e-6)
    assert aa.item() == pytest.approx(2.0, abs=1e-6)
    assert msr_loss(q1, q2, z1, z2, 0.5).loss.item() == pytest.approx(
        0.5 * weak.item() + 0.5 * aa.item(), abs=1e-6
    )


def test_scale_invariance_of_mse():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert normalized_mse(a, b).item() == pytest.approx(
        normalized_mse(3 * a, 0.1 * b).item(), abs=1e-5
    )


def test_targets_receive_no_gradient():
    q1, q2, z1, z2 = _vectors()
    msr_loss(q1, q2, z1, z2, beta=0.3).loss.backward()
    assert z1.grad is None and z2.grad is None
    assert q1.grad is not None and q2.grad is not None


def test_beta_term_gradient_flows_only_to_the_non_detached_side():
    # With beta = 1 only mse(q1, sg(q2)) + mse(q2, sg(q1)) remains. For unit q1 orthogonal to unit q2,
    # d/dq1 [2 - 2 cos(q1, c)] = -2 c, so q1.grad = -2 q2 from its own term and nothing from the other.
    q1, q2, z1, z2 = _vectors()
    msr_loss(q1, q2, z1, z2, beta=1.0, stop_grad_aa=True).loss.backward()
    assert torch.allclose(q1.grad, torch.tensor([[0.0, -2.0]]), atol=1e-6)
    assert torch.allclose(q2.grad, torch.tensor([[-2.0, 0.0]]), atol=1e-6)


def test_without_stop_gradient_both_sides_of_the_beta_term_get_gradient():
    q1, q2, z1, z2 = _vectors()
    msr_loss(q1, q2, z1, z2, beta=1.0, stop_grad_aa=False).loss.backward()
    assert torch.allclose(q1.grad, torch.tensor([[0.0, -4.0]]), atol=1e-6)
    assert torch.allclose(q2.grad, torch.tensor([[-4.0, 0.0]]), atol=1e-6)


def test_beta_zero_is_byol_with_weak_targets():
    torch.manual_seed(0)
    q1, q2, z1, z2 = (torch.randn(5, 16) for _ in range(4))
    byol_aw = normalized_mse(q1, z2) + normalized_mse(q2, z1)
    assert msr_loss(q1, q2, z1, z2, beta=0.0).loss.item() == pytest.approx(byol_aw.item(), abs=1e-6)


def test_loss_is_fp32_for_half_precision_inputs():
    torch.manual_seed(0)
    q1, q2, z1, z2 = (torch.randn(3, 8).to(torch.bfloat16) for _ in range(4))
    assert msr_loss(q1, q2, z1, z2, 0.3).loss.dtype == torch.float32


def test_simsiam_distance_is_half_negative_cosine():
    q1, q2, z1, z2 = _vectors()
    # weak: -cos(q1, z2)/2 - cos(q2, z1)/2 = -1/(2 sqrt2); aa: 0
    expected = 0.6 * (-1 / (2 * SQRT2)) + 0.4 * 0.0
    assert msr_loss(q1, q2, z1, z2, beta=0.4, distance="negcos").loss.item() == pytest.approx(
        expected, abs=1e-6
    )
