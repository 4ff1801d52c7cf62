"""MSR (the paper's method) and SimSiam + MSR (Table 8): multi-stage views, the beta-weighted loss."""

from __future__ import annotations

from .base import EMATargetMethod, Method


class MSR(EMATargetMethod):
    """BYOL with multi-stage views: online sees t2(t1(x)), the EMA target sees t1(x); beta weighs
    the aggressive-aggressive term (MSR.BETA_BASE, MSR.BETA_SCHEDULE)."""

    name = "msr"
    description = "MSR: weak target views, aggressive online views, beta-weighted eq. 5"
    uses_beta = True
    multi_stage = True


class SimSiamMSR(Method):
    """SimSiam + MSR: eq. 5 with SimSiam's distance; the targets are the online projections of the
    weak views under stop-gradient (no EMA network)."""

    name = "simsiam_msr"
    description = "SimSiam + MSR: eq. 5 with SimSiam's distance, stop-gradient online targets"
    ema_target = False
    distance = "negcos"
    uses_beta = True
    multi_stage = True

    def targets(self, online, target, target_views, projections):
        return online(target_views[0])[0], online(target_views[1])[0]
