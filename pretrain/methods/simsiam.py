"""SimSiam: no EMA network; the targets are the online projections under stop-gradient."""

from __future__ import annotations

from .base import Method


class SimSiam(Method):
    """Two views (METHOD.VIEWS AA or AW), SimSiam's -cos / 2 per pair, z = sg(online projection)."""

    name = "simsiam"
    description = "SimSiam: stop-gradient online targets, -cos / 2 per pair (METHOD.VIEWS AA or AW)"
    ema_target = False
    distance = "negcos"
    uses_beta = False
    multi_stage = False

    def targets(self, online, target, target_views, projections):
        return projections[0].detach(), projections[1].detach()
