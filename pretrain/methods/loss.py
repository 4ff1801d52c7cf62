"""The loss of MSR and its baselines, as pure functions of network outputs.

Notation of the paper (eq. 5): q1, q2 are the online predictions for the two aggressive views,
z1, z2 the target projections of the two weak views, with q1's aggressive view made from z1's
weak view. The weak-aggressive term pairs each prediction with the OTHER weak view (as BYOL
pairs views); the aggressive-aggressive term pairs the two predictions with each other.

Every method of :data:`pretrain.methods.METHODS` trains with :func:`msr_loss`: BYOL is beta = 0
(its symmetric loss), SimSiam is beta = 0 with the "negcos" distance, SimSiam + MSR is the
"negcos" distance with beta.
"""

from __future__ import annotations

from typing import NamedTuple

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


class LossTerms(NamedTuple):
    """The loss that is minimised and its two unweighted terms (logged beside it)."""

    loss: Tensor  # (1 - beta) * weak_aggressive + beta * aggressive_aggressive
    weak_aggressive: Tensor
    aggressive_aggressive: Tensor


def msr_loss(
    q1: Tensor,
    q2: Tensor,
    z1: Tensor,
    z2: Tensor,
    beta,
    stop_grad_aa: bool = True,
    distance: str = "mse",
) -> LossTerms:
    """Eq. 5, in fp32: (1 - beta) [d(q1, z2) + d(q2, z1)] + beta [d(q1, sg(q2)) + d(q2, sg(q1))].

    d is 2 - 2 cos averaged over the batch ("mse", BYOL / MSR) or SimSiam's -cos / 2 per pair
    ("negcos"). The targets z1, z2 are detached; ``stop_grad_aa`` also detaches the other
    aggressive view in the beta term. With beta = 0 this is BYOL's (or SimSiam's) symmetric loss.
    """
    fn, scale = DISTANCES[distance]
    q1, q2 = q1.float(), q2.float()
    z1, z2 = z1.detach().float(), z2.detach().float()
    weak_term = scale * (fn(q1, z2) + fn(q2, z1))
    if stop_grad_aa:
        aggressive_term = scale * (fn(q1, q2.detach()) + fn(q2, q1.detach()))
    else:
        aggressive_term = scale * (fn(q1, q2) + fn(q2, q1))
    return LossTerms((1.0 - beta) * weak_term + beta * aggressive_term, weak_term, aggressive_term)
