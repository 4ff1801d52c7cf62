"""The training-loop skeleton (in the manner of detectron2's TrainerBase / HookBase).

:class:`TrainerBase` runs epochs of steps and calls its hooks at fixed moments; it knows nothing of
what they do. Periodic actions (metrics, progress output, kNN evaluation, checkpoints, stopping on a
signal, the bad-image report) are :class:`HookBase` subclasses in ``pretrain/engine/hooks.py``. A
trainer implements the four methods that say what a step and an epoch are, and exposes ``epoch``
and ``iteration`` (steps taken) for the hooks.

The moments, in order::

    before_train
    per epoch:  epoch_batches, before_epoch, then per step: run_step, after_step;  then after_epoch
    after_train                     (only when the loop ends normally, stopped by a hook included)

A hook ends training by calling :meth:`TrainerBase.request_stop`: the current step finishes, the
rest of the epoch (and its ``after_epoch``) is skipped, and ``after_train`` still runs, so a hook can
save there. ``at_epoch_end`` tells hooks whether the step just taken ended the epoch, so that a
step-period action does not repeat what ``after_epoch`` will do.
"""

from __future__ import annotations

from typing import Iterable, List, Optional


class HookBase:
    """A periodic action of a training loop: override the moments you need (all are no-ops here)."""

    trainer: "TrainerBase"  # set by TrainerBase.register_hooks

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def close(self) -> None:
        """Release resources (files, bars, signal handlers); runs even when training raised."""


class TrainerBase:
    """Runs the loop and the hooks. Subclasses define a step and an epoch, never a periodic action."""

    def __init__(self):
        self.hooks: List[HookBase] = []
        self.stop_reason: Optional[str] = None  # set by a hook that ends training early
        # Whether the step just taken was the epoch's (or training's) last, and whether it made no
        # update (fp16 overflow); what the progress bar shows beside its count (set by a step or hook).
        self.at_epoch_end = False
        self.step_skipped = False
        self.progress_postfix: dict = {}

    # ------------------------------------------------------------------ what subclasses define
    def epoch_batches(self) -> Iterable:
        """The batches of the current epoch from the current position (called before before_epoch,
        so that hooks can read what it prepared, e.g. the number of steps)."""
        raise NotImplementedError

    def run_step(self, batch) -> None:
        """One step on ``batch``; it sets ``at_epoch_end``."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        """Advance the epoch counter after a completed epoch."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """Whether training has reached its end."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------- the skeleton
    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def request_stop(self, reason: str) -> None:
        """End training after the current step (called by a hook)."""
        self.stop_reason = reason

    def _call(self, moment: str) -> None:
        for hook in self.hooks:
            getattr(hook, moment)()

    def train_one_epoch(self) -> None:
        """The steps from the current position to the end of the epoch, of training, or a stop request,
        with the step-level hooks (this is what a benchmark of the loop times)."""
        batches = self.epoch_batches()
        self._call("before_epoch")
        for batch in batches:
            self.run_step(batch)
            self._call("after_step")
            if self.at_epoch_end or self.stop_reason is not None:
                break
        if self.stop_reason is None:
            self.end_epoch()

    def run_epoch(self) -> None:
        """:meth:`train_one_epoch`, then the epoch-level hooks when the epoch completed."""
        self.train_one_epoch()
        if self.stop_reason is None:
            self._call("after_epoch")

    def run_loop(self) -> None:
        """Epochs until the end of training or a stop request, with every hook moment."""
        try:
            self._call("before_train")
            while not self.finished and self.stop_reason is None:
                self.run_epoch()
            self._call("after_train")
        finally:
            self._call("close")
