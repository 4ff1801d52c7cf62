"""TrainerBase and HookBase: the moments hooks see, in order, and how a hook stops training."""

import pytest

from pretrain.engine.train_loop import HookBase, TrainerBase


class Counter(TrainerBase):
    """Epochs of ``per_epoch`` steps until ``total`` steps; a step adds one to ``step``."""

    def __init__(self, total=12, per_epoch=4):
        super().__init__()
        self.step, self.epoch, self.in_epoch, self.total, self.per_epoch = 0, 0, 0, total, per_epoch

    def epoch_batches(self):
        return range(self.per_epoch - self.in_epoch)

    def run_step(self, batch):
        self.step += 1
        self.in_epoch += 1
        self.at_epoch_end = self.in_epoch == self.per_epoch or self.finished

    def end_epoch(self):
        self.epoch, self.in_epoch = self.epoch + 1, 0

    @property
    def finished(self):
        return self.step >= self.total


class Recorder(HookBase):
    def __init__(self, log, stop_at=None, fail_at=None):
        self.log, self.stop_at, self.fail_at = log, stop_at, fail_at

    def before_train(self):
        self.log.append("before_train")

    def before_epoch(self):
        self.log.append(f"before_epoch {self.trainer.epoch}")

    def after_step(self):
        self.log.append(f"step {self.trainer.step}{' end' if self.trainer.at_epoch_end else ''}")
        if self.trainer.step == self.stop_at:
            self.trainer.request_stop("test")
        if self.trainer.step == self.fail_at:
            raise RuntimeError("boom")

    def after_epoch(self):
        self.log.append(f"after_epoch {self.trainer.epoch}")

    def after_train(self):
        self.log.append(f"after_train {self.trainer.stop_reason}")

    def close(self):
        self.log.append("close")


def test_hooks_see_every_moment_in_order():
    log = []
    trainer = Counter(total=6, per_epoch=4)
    trainer.register_hooks([Recorder(log)])
    trainer.run_loop()
    assert log == [
        "before_train",
        "before_epoch 0",
        "step 1",
        "step 2",
        "step 3",
        "step 4 end",
        "after_epoch 1",
        "before_epoch 1",
        "step 5",
        "step 6 end",
        "after_epoch 2",
        "after_train None",
        "close",
    ]


def test_a_stop_request_ends_the_epoch_skips_after_epoch_and_still_runs_after_train():
    log = []
    trainer = Counter()
    trainer.register_hooks([Recorder(log, stop_at=2)])
    trainer.run_loop()
    assert log == [
        "before_train",
        "before_epoch 0",
        "step 1",
        "step 2",
        "after_train test",
        "close",
    ]
    assert trainer.epoch == 0 and trainer.in_epoch == 2  # the epoch is not counted as completed


def test_close_runs_when_a_step_raises_and_after_train_does_not():
    log = []
    trainer = Counter()
    trainer.register_hooks([Recorder(log, fail_at=3)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run_loop()
    assert log[-2:] == ["step 3", "close"]


def test_hooks_act_in_registration_order():
    log = []
    trainer = Counter(total=1, per_epoch=1)
    first, second = Recorder(log), Recorder([])
    second.after_step = lambda: log.append("second")
    trainer.register_hooks([first, second])
    trainer.run_loop()
    assert log.index("step 1 end") < log.index("second")
