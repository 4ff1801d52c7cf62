"""Per-step schedules: learning rate (warm-up + cosine), EMA momentum tau, and MSR's beta.

``step`` counts optimizer steps; ``total_steps`` is K. All functions are pure so they can be
unit-tested at k = 0, K/2, K and recomputed exactly on resume.
"""

from __future__ import annotations

import math


def _cosine_factor(step: int, total_steps: int) -> float:
    """(cos(pi k / K) + 1) / 2: 1 at k = 0, 0.5 at K/2, 0 at K."""
    step = min(max(step, 0), total_steps)
    return 0.5 * (math.cos(math.pi * step / total_steps) + 1.0)


def beta_at(step: int, total_steps: int, beta_base: float, schedule: str = "cosine") -> float:
    """Eq. 6: beta_k = beta_base * 0.5 (cos(pi k / K) + 1); constant when asked."""
    if schedule == "constant":
        return beta_base
    return beta_base * _cosine_factor(step, total_steps)


def tau_at(step: int, total_steps: int, tau_base: float, schedule: str = "cosine") -> float:
    """BYOL's EMA momentum: tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2; constant when asked."""
    if schedule == "constant":
        return tau_base
    return 1.0 - (1.0 - tau_base) * _cosine_factor(step, total_steps)


def lr_at(
    step: int, total_steps: int, base_lr: float, warmup_steps: int = 0, min_lr: float = 0.0
) -> float:
    """Linear warm-up over ``warmup_steps`` (reaching base_lr at the last warm-up step), then cosine to min_lr.

    The lr for step k (0-based: the k-th optimizer step to be taken) is
    base_lr (k + 1) / W during warm-up, else min_lr + (base_lr - min_lr) (cos(pi (k - W) / (K - W)) + 1) / 2.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    return min_lr + (base_lr - min_lr) * _cosine_factor(step - warmup_steps, decay_steps)
