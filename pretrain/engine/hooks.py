"""The periodic actions of the training loops, one hook each (see pretrain/engine/train_loop.py).

Pretraining (``pretrain.engine.trainer.Pretrainer.build_hooks``) registers, in the order in which they
act at each moment: metrics, progress, kNN, checkpoint, bad-image report, stop on signal. At an
epoch's end the kNN evaluation therefore comes before the checkpoint, and the stop request is polled
last, after the epoch's checkpoint. Linear evaluation (``transfer/lincls.py``) registers the progress
bar, the epoch record and a checkpoint every epoch.
"""

from __future__ import annotations

import logging
import time

from pretrain.data.datasets import bad_image_report
from pretrain.engine.train_loop import HookBase
from pretrain.utils.logger import on_terminal, progress_bar

logger = logging.getLogger("pretrain")


class ProgressBar(HookBase):
    """Progress of each epoch: a tqdm bar of ``trainer.remaining_in_epoch`` steps on a terminal, else
    (output to a file, SLURM, CI, or the bar disabled) a plain log line every ``log_period`` steps
    (0: none; linear evaluation logs each epoch instead).

    Both show ``trainer.progress_label`` and ``trainer.progress_postfix`` (set by a hook or the step);
    the line adds the step count and, when ``trainer.total_iterations`` is known, the time left.
    """

    def __init__(self, enabled: bool, log_period: int = 0):
        self.live = enabled and on_terminal()
        self.log_period = log_period
        self.bar = None
        self.tic = None  # when and at which iteration this process began (for the time left)

    def before_epoch(self) -> None:
        t = self.trainer
        self.close()
        if self.tic is None:
            self.tic, self.start = time.perf_counter(), t.iteration
        if self.live:
            self.bar = progress_bar(t.remaining_in_epoch, t.progress_label, True)

    def after_step(self) -> None:
        t = self.trainer
        if self.bar is not None:
            self.bar.update(1)
            if t.progress_postfix:
                self.bar.set_postfix(**t.progress_postfix)
            if t.at_epoch_end:
                self.close()
        elif self.log_period and t.iteration % self.log_period == 0:
            logger.info(self.line())

    def line(self) -> str:
        """e.g. ``epoch 3: step 700/2808, loss 0.9858, img_s 210, 41:07 left``."""
        t = self.trainer
        total = getattr(t, "total_iterations", None)
        parts = [f"{t.progress_label}: step {t.iteration}" + (f"/{total}" if total else "")]
        parts += [f"{key} {value}" for key, value in t.progress_postfix.items()]
        done = t.iteration - self.start
        if total and done > 0:
            left = (time.perf_counter() - self.tic) / done * (total - t.iteration)
            parts.append(f"{format_duration(left)} left")
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_duration(seconds: float) -> str:
    """``1:02:03`` for an hour or more, else ``2:03``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PeriodicMetrics(HookBase):
    """A record in metrics.jsonl (and TensorBoard) every LOG_PERIOD steps, at the epoch's last step and
    at every skipped fp16 step, with the images/s since the previous record (registered before
    :class:`ProgressBar`, which shows the record's loss and speed)."""

    def __init__(self, log_period: int):
        self.log_period = log_period

    def before_epoch(self) -> None:
        self.tic, self.images = time.perf_counter(), 0

    def after_step(self) -> None:
        t, st = self.trainer, self.trainer.state
        self.images += t.batch_images
        if st.step % self.log_period == 0 or t.at_epoch_end or t.step_skipped:
            elapsed = time.perf_counter() - self.tic
            t.record.update(
                step=st.step, epoch=st.epoch, images_per_s=self.images / max(elapsed, 1e-9)
            )
            t.metrics.write(t.record)
            t.progress_postfix = {
                "loss": f"{t.record['loss']:.4f}",
                "img_s": f"{t.record['images_per_s']:.0f}",
            }
            self.tic, self.images = time.perf_counter(), 0


class EpochRecord(HookBase):
    """After each epoch, ``trainer.epoch_record`` into metrics.jsonl and ``trainer.epoch_summary`` into
    the log (linear evaluation's per-epoch results)."""

    def after_epoch(self) -> None:
        t = self.trainer
        t.metrics.write(t.epoch_record)
        logger.info(t.epoch_summary)


class KNNEvaluation(HookBase):
    """kNN top-1 at the start (KNN.AT_START), every KNN.STEP_PERIOD steps, every KNN.PERIOD epochs
    and at the end; the epoch-level value is the run's result (``trainer.knn_top1``)."""

    def __init__(self, period_epochs: int, period_steps: int, at_start: bool):
        self.period_epochs = period_epochs
        self.period_steps = period_steps
        self.at_start = at_start

    def before_train(self) -> None:
        st = self.trainer.state
        if self.period_epochs > 0 and self.at_start and st.step == 0 and st.batch_in_epoch == 0:
            self.trainer.evaluate_knn()

    def after_step(self) -> None:
        t = self.trainer
        if t.at_epoch_end or t.step_skipped or not self.period_steps:
            return
        if t.state.step % self.period_steps == 0:
            t.evaluate_knn()

    def after_epoch(self) -> None:
        t = self.trainer
        if self.period_epochs > 0 and (t.finished or t.state.epoch % self.period_epochs == 0):
            t.knn_top1 = t.evaluate_knn()


class PeriodicCheckpoint(HookBase):
    """``trainer.save()`` every ``period_steps`` steps (0: never), every ``period_epochs`` epochs and at
    the end (pretraining: CHECKPOINT.STEP_PERIOD / CHECKPOINT.PERIOD; linear evaluation: every epoch)."""

    def __init__(self, period_epochs: int, period_steps: int):
        self.period_epochs = period_epochs
        self.period_steps = period_steps

    def _step_due(self) -> bool:
        return bool(self.period_steps) and self.trainer.iteration % self.period_steps == 0

    def after_step(self) -> None:
        t = self.trainer
        if not t.at_epoch_end and not t.step_skipped and self._step_due():
            t.save()

    def after_epoch(self) -> None:
        t = self.trainer
        if t.finished or t.epoch % self.period_epochs == 0 or self._step_due():
            t.save()


class BadImageReport(HookBase):
    """After each epoch, a warning naming the unreadable images skipped so far (DATA.BAD_IMAGES skip)."""

    def after_epoch(self) -> None:
        report = bad_image_report(self.trainer.train_loader.dataset)
        if report:
            logger.warning(report)


class StopOnSignal(HookBase):
    """SIGTERM / SIGUSR1 (pretrain.utils.preemption) end training at the next step or epoch boundary;
    the run then saves and reports itself preempted (exit status 75)."""

    def __init__(self, stop_request, device):
        self.stop_request = stop_request
        self.device = device

    def before_train(self) -> None:
        self.stop_request.install()

    def after_step(self) -> None:
        if not self.trainer.at_epoch_end and self.stop_request.requested(self.device):
            self.trainer.request_stop(self.stop_request.signal_name)

    def after_epoch(self) -> None:
        if not self.trainer.finished and self.stop_request.requested(self.device):
            self.trainer.request_stop(self.stop_request.signal_name)

    def after_train(self) -> None:
        t = self.trainer
        if t.stop_reason is not None:
            logger.warning(
                f"{t.stop_reason} received: saving at step {t.state.step} and stopping "
                f"(exit status 75); continue with --resume"
            )
            t.save()

    def close(self) -> None:
        self.stop_request.uninstall()


__all__ = [
    "BadImageReport",
    "EpochRecord",
    "KNNEvaluation",
    "PeriodicCheckpoint",
    "PeriodicMetrics",
    "ProgressBar",
    "StopOnSignal",
]
