"""Loss functions of MSR and its baselines, as pure functions of network outputs.

Notation of the paper (eq. 5): q1, q2 are the online predictions for the two aggressive views,
z1, z2 the target projections of the two weak views, with q1's aggressive view made from z1's
weak view. The weak-aggressive term pairs each prediction with the OTHER weak view (as BYOL
pairs views); the aggressive-aggressive term pairs the two predictions with each other.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def normalized_mse(p: Tensor, z: Tensor) -> Tensor:
    """Mean over the batch of ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)."""
    return (2.0 - 2.0 * F.cosine_similarity(p, z, dim=-1)).mean()


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's distance: mean over the batch of -cos(p, z)."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


DISTANCES = {
    "mse": (normalized_mse, 1.0),  # BYOL / MSR: 2 - 2 cos per pair
    "negcos": (negative_cosine, 0.5),  # SimSiam: -cos with a factor 1/2 per pair
}


def msr_loss_parts(q1: Tensor, q2: Tensor, z1: Tensor, z2: Tensor, stop_grad_aa: bool = True,
                   distance: str = "mse") -> Tuple[Tensor, Tensor]:
    """The two unweighted terms of eq. 5, (weak-aggressive, aggressive-aggressive), in fp32.

    The target outputs z1, z2 are detached. ``distance`` is "mse" (2 - 2 cos, BYOL/MSR) or
    "negcos" (SimSiam's -cos/2 per pair, for SimSiam + MSR where z are stop-gradient online outputs).
    """
    fn, scale = DISTANCES[distance]
    q1, q2 = q1.float(), q2.float()
    z1, z2 = z1.detach().float(), z2.detach().float()
    weak_term = fn(q1, z2) + fn(q2, z1)
    if stop_grad_aa:
        aggressive_term = fn(q1, q2.detach()) + fn(q2, q1.detach())
    else:
        aggressive_term = fn(q1, q2) + fn(q2, q1)
    return scale * weak_term, scale * aggressive_term


def weighted_sum(weak_term: Tensor, aggressive_term: Tensor, beta) -> Tensor:
    """(1 - beta) * weak-aggressive term + beta * aggressive-aggressive term."""
    return (1.0 - beta) * weak_term + beta * aggressive_term


def msr_loss(q1: Tensor, q2: Tensor, z1: Tensor, z2: Tensor, beta, stop_grad_aa: bool = True) -> Tensor:
    """Eq. 5: (1 - beta) [mse(q1, z2) + mse(q2, z1)] + beta [mse(q1, sg(q2)) + mse(q2, sg(q1))].

    mse = 2 - 2 cos, averaged over the batch. With beta = 0 this is BYOL's symmetric loss with
    weak target views (BYOL-AW). ``stop_grad_aa`` detaches the other aggressive view in the beta term.
    """
    return weighted_sum(*msr_loss_parts(q1, q2, z1, z2, stop_grad_aa), beta)


def simsiam_msr_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor, beta, stop_grad_aa: bool = True) -> Tensor:
    """SimSiam + MSR: eq. 5 with SimSiam's distance (-cos, 1/2 per pair); beta = 0 is SimSiam's loss.

    z1, z2 are the online projections of the weak views, detached (SimSiam has no EMA target).
    """
    return weighted_sum(*msr_loss_parts(p1, p2, z1, z2, stop_grad_aa, distance="negcos"), beta)
