"""The pretraining methods, one small object per name: ``METHODS[cfg.METHOD.NAME]``.

To add a method: a subclass of :class:`Method` in its own module (its views, whether it has an
EMA target, its distance, whether it uses beta, and how it computes its targets), then one line in
:data:`METHODS`. The config's choices for METHOD.NAME, model building, augmentation and the
training step all read it from here (docs/ARCHITECTURE.md has a worked example).
"""

from __future__ import annotations

from typing import Dict

from .base import VIEW_LAYOUTS, VIEWS, EMATargetMethod, Method
from .byol import BYOL
from .loss import DISTANCES, LossTerms, msr_loss, negative_cosine, normalized_mse
from .msr import MSR, SimSiamMSR
from .simsiam import SimSiam

METHODS: Dict[str, Method] = {
    method.name: method for method in (MSR(), BYOL(), SimSiam(), SimSiamMSR())
}


def method_of(cfg) -> Method:
    """The method object of ``cfg.METHOD.NAME`` (the config has already checked the name)."""
    return METHODS[cfg.METHOD.NAME]


def view_layout(cfg) -> str:
    """The loader's view layout for ``cfg`` (VIEW_LAYOUTS): the method's, given METHOD.VIEWS."""
    return method_of(cfg).view_layout(cfg.METHOD.VIEWS)


__all__ = [
    "BYOL",
    "DISTANCES",
    "EMATargetMethod",
    "LossTerms",
    "METHODS",
    "MSR",
    "Method",
    "SimSiam",
    "SimSiamMSR",
    "VIEWS",
    "VIEW_LAYOUTS",
    "method_of",
    "msr_loss",
    "negative_cosine",
    "normalized_mse",
    "view_layout",
]
