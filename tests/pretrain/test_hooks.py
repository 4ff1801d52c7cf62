"""The progress hook: a live bar on a terminal, plain log lines in files (SLURM output, CI, > file)."""

import logging

from test_train_loop import Counter

from pretrain.engine import hooks
from pretrain.engine.hooks import ProgressBar, format_duration
from pretrain.utils import logger as logger_module


class Shown(Counter):
    """A Counter with what the progress hook reads from a trainer."""

    progress_label = "epoch 0"
    total_iterations = 12

    @property
    def iteration(self):
        return self.step

    @property
    def remaining_in_epoch(self):
        return self.per_epoch - self.in_epoch


def _run(monkeypatch, terminal: bool, enabled=True, log_period=5):
    monkeypatch.setattr(hooks, "on_terminal", lambda: terminal)
    monkeypatch.setattr(logger_module, "on_terminal", lambda: terminal)
    bars = []
    real = hooks.progress_bar
    monkeypatch.setattr(hooks, "progress_bar", lambda *a: bars.append(real(*a)) or bars[-1])
    trainer = Shown(total=12, per_epoch=4)
    trainer.progress_postfix = {"loss": "0.5000"}
    trainer.register_hooks([ProgressBar(enabled, log_period)])
    trainer.run_loop()
    return bars


def test_off_a_terminal_there_is_no_bar_and_a_line_every_log_period(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="pretrain"):
        bars = _run(monkeypatch, terminal=False)
    lines = [r.getMessage() for r in caplog.records]
    assert bars == []
    assert [line.split(",")[0] for line in lines] == ["epoch 0: step 5/12", "epoch 0: step 10/12"]
    assert "loss 0.5000" in lines[0] and lines[0].endswith("left")


def test_on_a_terminal_a_bar_per_epoch_and_no_lines(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="pretrain"):
        bars = _run(monkeypatch, terminal=True)
    assert len(bars) == 3 and not caplog.records  # one bar per epoch of 4 steps
    assert [bar.n for bar in bars] == [4, 4, 4]


def test_a_disabled_bar_on_a_terminal_gives_lines_instead(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="pretrain"):
        bars = _run(monkeypatch, terminal=True, enabled=False, log_period=6)
    assert bars == [] and len(caplog.records) == 2


def test_durations_read_as_clock_times():
    assert format_duration(0.4) == "0:00"
    assert format_duration(123) == "2:03"
    assert format_duration(3723) == "1:02:03"
