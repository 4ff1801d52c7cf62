"""BYOL: an EMA target, the symmetric 2 - 2 cos loss; METHOD.VIEWS AA (standard) or AW (Table 1)."""

from __future__ import annotations

from .base import EMATargetMethod


class BYOL(EMATargetMethod):
    """Two views through both networks, each prediction matched to the target's projection of the
    other view. AA: both views fully aggressive; AW (the official BYOL-AW): one aggressive, one weak."""

    name = "byol"
    description = "BYOL: EMA target, symmetric loss over two views (METHOD.VIEWS AA or AW)"
    uses_beta = False
    multi_stage = False
