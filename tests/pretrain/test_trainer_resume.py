"""Long-run safety: SIGKILL and resume, SIGTERM / SIGUSR1 preemption, corrupt checkpoints, skipped fp16 steps.

The parity tests run tools/pretrain.py as real processes (one compute thread each, one loader worker)
and compare the final checkpoints bit for bit with an uninterrupted run of the same config.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from pretrain.config import load_config
from pretrain.engine.checkpoint import CheckpointError, load_checkpoint, verify_digest
from pretrain.engine.checkpointer import list_checkpoints
from pretrain.engine.schedules import beta_at, lr_at
from pretrain.engine.trainer import Pretrainer, train_step
from pretrain.utils.preemption import EXIT_PREEMPTED

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOTAL_STEPS = 30  # 21 steps per epoch at batch 64: the runs cross an epoch boundary
RUN = [
    "MODEL.WIDTH",
    "4",
    "MODEL.HIDDEN_DIM",
    "32",
    "MODEL.OUT_DIM",
    "16",
    "SOLVER.BATCH_SIZE",
    "64",
    "SOLVER.EPOCHS",
    "2",
    "SOLVER.MAX_STEPS",
    str(TOTAL_STEPS),
    "SOLVER.WARMUP_EPOCHS",
    "0",
    "DATA.NUM_WORKERS",
    "1",
    "KNN.PERIOD",
    "0",
    "CHECKPOINT.PERIOD",
    "1",
    "CHECKPOINT.KEEP_LAST",
    "2",
    "PROGRESS_BAR",
    "False",
    "LOG_PERIOD",
    "1",
    "DEVICE",
    "cpu",
    "DETERMINISTIC",
    "True",
]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _command(output_dir, *opts, resume=False):
    return [
        sys.executable,
        os.path.join(ROOT, "tools", "pretrain.py"),
        "--cfg",
        "digits_demo.yaml",
        *RUN,
        "OUTPUT_DIR",
        str(output_dir),
        *opts,
    ] + (["--resume"] if resume else [])


def _run(output_dir, *opts, resume=False) -> subprocess.CompletedProcess:
    done = subprocess.run(
        _command(output_dir, *opts, resume=resume),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _steps_logged(output_dir) -> list:
    path = os.path.join(output_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as handle:
        return [
            json.loads(line)["step"] for line in handle if line.endswith("\n") and '"loss"' in line
        ]


def _start_and_wait(output_dir, until_step: int, *opts) -> subprocess.Popen:
    """Start a run and return once it has logged ``until_step`` (the process is still training)."""
    process = subprocess.Popen(
        _command(output_dir, *opts),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not any(step >= until_step for step in _steps_logged(output_dir)):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run did not reach the step in time"
        time.sleep(0.02)
    return process


def _assert_same_final_state(reference_dir, other_dir):
    name = f"checkpoint_{TOTAL_STEPS:07d}.pth"
    ref, other = (load_checkpoint(os.path.join(d, name)) for d in (reference_dir, other_dir))
    for part in ("model", "target"):
        for key, value in ref[part].items():
            assert torch.equal(value, other[part][key]), f"{part}.{key} differs"
    ref_momentum = ref["optimizer"]["state"]
    for index, state in ref_momentum.items():
        assert torch.equal(
            state["momentum_buffer"], other["optimizer"]["state"][index]["momentum_buffer"]
        )
    assert (ref["step"], ref["epoch"]) == (other["step"], other["epoch"])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    output_dir = tmp_path_factory.mktemp("resume") / "reference"
    _run(output_dir)
    return output_dir


def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(reference_run, tmp_path):
    """Killed without warning mid-epoch (checkpoints every step), then resumed: same weights as never stopped."""
    kill_after = random.randint(3, 25)  # any step must work; printed so a failure can be replayed
    print(f"SIGKILL after step {kill_after}")
    output_dir = tmp_path / "killed"
    process = _start_and_wait(output_dir, kill_after, "CHECKPOINT.STEP_PERIOD", "1")
    process.send_signal(signal.SIGKILL)
    process.communicate()
    saved = load_checkpoint(list_checkpoints(str(output_dir))[-1])
    print(
        f"killed at step {saved['step']} (epoch {saved['epoch']}, batch {saved['batch_in_epoch']})"
    )
    assert saved["step"] < TOTAL_STEPS

    _run(output_dir, "CHECKPOINT.STEP_PERIOD", "1", resume=True)
    _assert_same_final_state(reference_run, output_dir)
    assert _steps_logged(output_dir) == list(
        range(1, TOTAL_STEPS + 1)
    )  # the killed run's extra lines dropped


@pytest.mark.parametrize("stop_signal", ["SIGUSR1", "SIGTERM"])
def test_stop_signal_saves_at_the_next_step_and_exits_75(reference_run, tmp_path, stop_signal):
    output_dir = tmp_path / "preempted"
    process = _start_and_wait(
        output_dir, 5
    )  # no step checkpoints: the signal makes the only mid-run save
    process.send_signal(getattr(signal, stop_signal))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED == 75, stderr[-3000:]
    assert f"{stop_signal} received" in stderr and "Traceback" not in stderr
    saved = load_checkpoint(list_checkpoints(str(output_dir))[-1])
    assert 5 <= saved["step"] < TOTAL_STEPS
    if stop_signal == "SIGUSR1":  # the requeued job continues to the same result
        _run(output_dir, resume=True)
        _assert_same_final_state(reference_run, output_dir)


def _tiny(tmp_path, *opts):
    return load_config(
        "digits_demo.yaml",
        RUN
        + ["OUTPUT_DIR", str(tmp_path), "DATA.NUM_WORKERS", "0", "DETERMINISTIC", "False", *opts],
    )


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("damage", ["truncate", "flip_bytes"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    cfg = _tiny(
        tmp_path / "run",
        "SOLVER.MAX_STEPS",
        "3",
        "CHECKPOINT.STEP_PERIOD",
        "1",
        "CHECKPOINT.KEEP_LAST",
        "3",
    )
    Pretrainer(cfg).train()
    newest = list_checkpoints(cfg.OUTPUT_DIR)[-1]
    data = bytearray(open(newest, "rb").read())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # inside tensor data: torch.load alone would load it silently; the SHA-256 companion catches it
        data[len(data) // 2 : len(data) // 2 + 8] = bytes(
            b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 8]
        )
    open(newest, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        verify_digest(newest) if damage == "flip_bytes" else load_checkpoint(newest)

    resumed = Pretrainer(cfg, resume=True)
    assert resumed.state.step == 2
    with open(os.path.join(cfg.OUTPUT_DIR, "log.txt")) as handle:
        log = handle.read()
    assert f"{os.path.basename(newest)}' is corrupt" in log or "corrupt" in log
    assert "Trying the previous checkpoint" in log


@pytest.mark.usefixtures("one_torch_thread")
def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    cfg = _tiny(tmp_path / "run", "SOLVER.MAX_STEPS", "1")
    Pretrainer(cfg).train()
    for path in list_checkpoints(cfg.OUTPUT_DIR):
        open(path, "wb").write(b"garbage")
    with pytest.raises(CheckpointError, match="None of the 1 checkpoint"):
        Pretrainer(cfg, resume=True)


@pytest.mark.usefixtures("one_torch_thread")
def test_resume_without_checkpoint_starts_a_new_run(tmp_path):
    """A requeued job always passes --resume; before its first checkpoint that starts from scratch."""
    trainer = Pretrainer(_tiny(tmp_path / "new", "SOLVER.MAX_STEPS", "1"), resume=True)
    assert trainer.state.step == 0 and trainer.train()["step"] == 1


@pytest.mark.usefixtures("one_torch_thread")
def test_fp16_step_skipped_by_the_grad_scaler_advances_nothing(tmp_path):
    """The rule: a skipped fp16 step is not a step: no weight, target, counter, lr, beta or tau change."""
    trainer = Pretrainer(
        _tiny(
            tmp_path / "fp16",
            "SOLVER.AMP",
            "fp16",
            "SOLVER.MAX_STEPS",
            "10",
            "MSR.BETA_SCHEDULE",
            "cosine",
        )
    )
    state, settings = trainer.state, trainer.settings
    views = next(iter(trainer.train_loader))[0]
    state.scaler = torch.amp.GradScaler(
        "cpu", init_scale=1024.0
    )  # the default 65536 overflows here at once
    train_step(
        state, views, settings
    )  # one normal step first: the schedules have moved off their start
    assert state.step == 1 and state.skipped_steps == 0
    online = {k: v.clone() for k, v in state.online.state_dict().items()}
    target = {k: v.clone() for k, v in state.target.state_dict().items()}

    state.scaler.update(new_scale=2.0**100)  # the scaled fp16 gradients overflow: the scaler skips
    record = train_step(state, views, settings)
    assert record["skipped"] == 1 and state.skipped_steps == 1 and state.step == 1
    assert state.scaler.get_scale() == 2.0**99  # backed off
    for key, value in online.items():
        if key.endswith("num_batches_tracked") or "running_" in key:
            continue  # BatchNorm statistics follow the forward pass, as in any framework
        assert torch.equal(state.online.state_dict()[key], value), key
    for key, value in target.items():
        if "running_" not in key and not key.endswith("num_batches_tracked"):
            assert torch.equal(state.target.state_dict()[key], value), key

    state.scaler.update(new_scale=1024.0)
    record = train_step(state, views, settings)  # the next real step uses the schedules at step 1
    assert record["skipped"] == 0 and state.step == 2
    assert record["lr"] == lr_at(
        1, settings.total_steps, settings.base_lr, settings.warmup_steps, settings.min_lr
    )
    assert record["beta"] == beta_at(
        1, settings.total_steps, settings.beta_base, settings.beta_schedule
    )
    assert record["grad_norm"] > 0


@pytest.mark.usefixtures("one_torch_thread")
def test_non_finite_fp32_loss_stops_with_the_step_terms_and_lr_and_keeps_the_checkpoints(tmp_path):
    from pretrain.engine.trainer import NonFiniteLossError

    first = _tiny(tmp_path / "run", "SOLVER.MAX_STEPS", "2", "CHECKPOINT.STEP_PERIOD", "1")
    Pretrainer(first).train()
    before = list_checkpoints(first.OUTPUT_DIR)
    trainer = Pretrainer(
        _tiny(tmp_path / "run", "SOLVER.MAX_STEPS", "4", "CHECKPOINT.STEP_PERIOD", "1"), resume=True
    )
    with torch.no_grad():
        trainer.state.online.predictor[0].weight.fill_(float("nan"))  # the next loss is NaN
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train()
    message = str(error.value)
    for text in (
        "Non-finite loss at step 2",
        "loss=nan",
        "weak-aggressive term=",
        "aggressive-aggressive term=",
        "lr=",
        "last checkpoint in OUTPUT_DIR is intact",
    ):
        assert text in message, text
    assert list_checkpoints(first.OUTPUT_DIR) == before  # nothing written after the failure
    saved = load_checkpoint(before[-1])
    assert saved["step"] == 2 and all(
        torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point()
    )
