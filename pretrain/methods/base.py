"""What every pretraining method states about itself, and the forward pass they share.

A method is a small object (one instance per name in :data:`pretrain.methods.METHODS`). Model
building reads :attr:`Method.ema_target`, augmentation reads :meth:`Method.view_layout`, and the
training step calls :meth:`Method.outputs` then :meth:`Method.loss`; nothing else in the project
asks which method runs.
"""

from __future__ import annotations

from typing import ClassVar, Optional, Sequence, Tuple

import torch

from .loss import LossTerms, msr_loss

Tensor = torch.Tensor

# What the loader delivers per image (pretrain.augment.MultiStageViews):
# "multi_stage": (w1, w2, a1, a2) with a_k = t2(w_k), two independent crops;
# "aa": (a1, a2), two independent fully aggressive views;
# "aw": (a1, w2), two independent crops, the first fully aggressive, the second weak (t1 only).
VIEW_LAYOUTS = ("multi_stage", "aa", "aw")
# METHOD.VIEWS of the two-view methods: both views aggressive, or one aggressive and one weak.
VIEWS = ("AW", "AA")


class Method:
    """A self-supervised method: its views, its target, its distance and its loss.

    Subclasses set the class attributes and :meth:`targets`; the online forward pass over the
    aggressive (or the two) views and the loss of eq. 5 are the same for all of them.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    ema_target: ClassVar[bool]  # learns against an EMA copy of the online encoder + projector
    distance: ClassVar[
        str
    ]  # "mse" (2 - 2 cos) or "negcos" (SimSiam's -cos / 2), pretrain.methods.loss
    uses_beta: ClassVar[bool]  # weighs in the aggressive-aggressive term with MSR.BETA_*
    multi_stage: ClassVar[bool]  # consumes (w1, w2, a1, a2); else two views chosen by METHOD.VIEWS

    def view_layout(self, views: str) -> str:
        """The loader's layout (VIEW_LAYOUTS); ``views`` (METHOD.VIEWS) matters for two-view methods."""
        if self.multi_stage:
            return "multi_stage"
        return {"AA": "aa", "AW": "aw"}[views]

    def outputs(
        self, online: torch.nn.Module, target: Optional[torch.nn.Module], views: Sequence[Tensor]
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(q1, q2, z1, z2) of eq. 5: online predictions of the last two views, targets without gradient.

        With 4 views the predictions come from the aggressive views (a1, a2) and the targets from
        the weak ones (w1, w2); with 2 views both come from the same two views, so the loss pairs
        each view with the other, as BYOL's and SimSiam's symmetric losses do.
        """
        p1, q1 = online(views[-2])
        p2, q2 = online(views[-1])
        with torch.no_grad():
            z1, z2 = self.targets(online, target, views[:2], (p1, p2))
        return q1, q2, z1, z2

    def targets(
        self,
        online: torch.nn.Module,
        target: Optional[torch.nn.Module],
        target_views: Sequence[Tensor],
        projections: Tuple[Tensor, Tensor],
    ) -> Tuple[Tensor, Tensor]:
        """z1, z2 for ``target_views`` (called under no_grad); ``projections`` are the online ones."""
        raise NotImplementedError

    def loss(
        self, q1: Tensor, q2: Tensor, z1: Tensor, z2: Tensor, beta: float, stop_grad_aa: bool
    ) -> LossTerms:
        """Eq. 5 with this method's distance; beta is ignored (0) by methods without it."""
        return msr_loss(
            q1, q2, z1, z2, beta if self.uses_beta else 0.0, stop_grad_aa, self.distance
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EMATargetMethod(Method):
    """BYOL and MSR: the targets are the EMA target network's projections."""

    ema_target = True
    distance = "mse"

    def targets(self, online, target, target_views, projections):
        return target(target_views[0]), target(target_views[1])
