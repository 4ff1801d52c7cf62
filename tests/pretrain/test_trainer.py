"""Tiny end-to-end pretraining runs on the digits data: every mode trains, logs, saves and resumes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import TINY_CPU_RUN, overrides

from pretrain.config import load_config
from pretrain.engine.checkpoint import CheckpointError, load_checkpoint
from pretrain.engine.checkpointer import latest_checkpoint, list_checkpoints
from pretrain.engine.knn import knn_from_checkpoint
from pretrain.engine.trainer import Pretrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = overrides(
    TINY_CPU_RUN,
    {
        "MODEL.STEM": "imagenet",
        "SOLVER.EPOCHS": 2,
        "SOLVER.MAX_STEPS": 0,
        "KNN.PERIOD": 1,
        "KNN.K": 20,
        "CHECKPOINT.PERIOD": 1,
        "CHECKPOINT.KEEP_LAST": 0,
        "PROGRESS_BAR": False,
        "LOG_PERIOD": 5,
    },
)


def tiny_config(output_dir, *opts):
    return load_config("digits_demo.yaml", TINY + ["OUTPUT_DIR", str(output_dir)] + list(opts))


def _read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def _short_run(output_dir, *opts):
    return tiny_config(output_dir, "SOLVER.MAX_STEPS", "3", "SOLVER.EPOCHS", "1", *opts)


@pytest.mark.parametrize(
    "opts",
    [
        ("METHOD.NAME", "msr"),
        ("METHOD.NAME", "byol", "METHOD.VIEWS", "AA"),
        ("METHOD.NAME", "simsiam", "METHOD.VIEWS", "AA"),
        ("METHOD.NAME", "simsiam_msr", "SOLVER.OPTIMIZER", "lars"),
        ("METHOD.NAME", "msr", "SOLVER.AMP", "bf16", "MODEL.CHANNELS_LAST", "True"),
        ("METHOD.NAME", "byol", "METHOD.VIEWS", "AW", "SOLVER.AMP", "fp16"),
        ("METHOD.NAME", "msr", "AUG.AGGRESSIVE_ON", "device"),
        ("METHOD.NAME", "byol", "METHOD.VIEWS", "AA", "AUG.AGGRESSIVE_ON", "device"),
        ("METHOD.NAME", "byol", "METHOD.VIEWS", "AW", "AUG.AGGRESSIVE_ON", "device"),
        ("METHOD.NAME", "simsiam", "METHOD.VIEWS", "AW"),
    ],
)
def test_every_mode_trains_and_logs(tmp_path, opts):
    cfg = _short_run(tmp_path / "run", *opts)
    result = Pretrainer(cfg).train()
    assert result["step"] == 3 and 0.0 <= result["knn_top1"] <= 100.0
    records = _read_metrics(cfg.OUTPUT_DIR)
    train = [r for r in records if "loss" in r]
    assert train and all(
        k in train[-1]
        for k in (
            "loss",
            "loss_weak_aggressive",
            "loss_aggressive_aggressive",
            "beta",
            "tau",
            "lr",
            "images_per_s",
        )
    )
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    for name in ("config.yaml", "log.txt"):
        assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, name))
    assert os.listdir(os.path.join(cfg.OUTPUT_DIR, "tensorboard"))


def test_checkpoint_resume_continues_the_same_run(tmp_path):
    """Stopping after epoch 1 and resuming gives bitwise the same weights as one uninterrupted run."""
    full = Pretrainer(tiny_config(tmp_path / "full"))
    full.train()

    first = Pretrainer(tiny_config(tmp_path / "split"))
    first.train_one_epoch()
    path = first.save()
    saved = load_checkpoint(path)
    assert saved["step"] == first.steps_per_epoch and saved["epoch"] == 1
    assert set(saved) >= {
        "model",
        "target",
        "optimizer",
        "scaler",
        "step",
        "epoch",
        "config",
        "rng",
    }

    resumed = Pretrainer(tiny_config(tmp_path / "split"), resume=True)
    assert resumed.state.step == first.steps_per_epoch
    resumed.train()
    assert resumed.state.step == full.state.step == 2 * first.steps_per_epoch
    for (name, a), b in zip(
        full.state.online.state_dict().items(), resumed.state.online.state_dict().values()
    ):
        assert torch.equal(a, b), name
    for a, b in zip(
        full.state.target.state_dict().values(), resumed.state.target.state_dict().values()
    ):
        assert torch.equal(a, b)


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    cfg = _short_run(tmp_path / "run")
    Pretrainer(cfg).train()
    with pytest.raises(FileExistsError, match="--resume"):
        Pretrainer(cfg)


def test_keep_last_prunes_old_checkpoints(tmp_path):
    cfg = tiny_config(
        tmp_path / "run", "SOLVER.EPOCHS", "3", "CHECKPOINT.KEEP_LAST", "2", "KNN.PERIOD", "0"
    )
    Pretrainer(cfg).train()
    paths = list_checkpoints(cfg.OUTPUT_DIR)
    assert len(paths) == 2 and paths[-1] == latest_checkpoint(cfg.OUTPUT_DIR)
    assert not [n for n in os.listdir(cfg.OUTPUT_DIR) if ".tmp." in n]


def test_wrong_and_corrupt_checkpoints_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "moco.pth")
    with pytest.raises(CheckpointError, match="not an MSR pretraining checkpoint"):
        load_checkpoint(str(tmp_path / "moco.pth"))
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(tmp_path / "broken.pth"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing.pth"))


def test_standalone_knn_matches_the_monitor(tmp_path):
    cfg = _short_run(tmp_path / "run")
    result = Pretrainer(cfg).train()
    path = latest_checkpoint(cfg.OUTPUT_DIR)
    assert knn_from_checkpoint(path) == pytest.approx(result["knn_top1"])
    assert 0.0 <= knn_from_checkpoint(path, which="target") <= 100.0
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "knn.py"), path],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and f"kNN top-1: {result['knn_top1']:.2f}" in out.stdout


def test_pretrain_tool_runs_end_to_end(tmp_path):
    out_dir = tmp_path / "cli"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "pretrain.py"),
        "--cfg",
        "digits_demo.yaml",
        *TINY,
        "SOLVER.MAX_STEPS",
        "2",
        "OUTPUT_DIR",
        str(out_dir),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert latest_checkpoint(str(out_dir)).endswith("checkpoint_0000002.pth")
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr


def test_tensorboard_holds_every_training_scalar(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _short_run(tmp_path / "run", "LOG_PERIOD", "1")
    Pretrainer(cfg).train()
    events = EventAccumulator(os.path.join(cfg.OUTPUT_DIR, "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    wanted = (
        "loss",
        "loss_weak_aggressive",
        "loss_aggressive_aggressive",
        "beta",
        "tau",
        "lr",
        "grad_norm",
        "images_per_s",
        "knn_top1",
    )
    assert {f"pretrain/{name}" for name in wanted} <= tags, tags
    grad_norms = [event.value for event in events.Scalars("pretrain/grad_norm")]
    assert len(grad_norms) == 3 and all(value > 0 for value in grad_norms)


def test_compile_switch_compiles_both_networks_and_keeps_checkpoint_keys(tmp_path, monkeypatch):
    """MODEL.COMPILE runs the step through torch.compile; parameter names (and so checkpoints) do not change.

    Dynamo traces with its "eager" backend here: the graph capture is what the engine controls, and it
    takes seconds on a CPU, where inductor's code generation would take minutes (that part ran on a GPU:
    docs/PERFORMANCE.md, --compile rows).
    """
    compiled = []
    original = torch.nn.Module.compile

    def compile_eagerly(module, *args, **kwargs):
        compiled.append(type(module).__name__)
        return original(module, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eagerly)
    torch._dynamo.reset()
    cfg = _short_run(
        tmp_path / "run", "MODEL.COMPILE", "True", "KNN.PERIOD", "0", "SOLVER.MAX_STEPS", "2"
    )
    trainer = Pretrainer(cfg)
    assert sorted(compiled) == ["OnlineNetwork", "TargetNetwork"]
    trainer.train()
    saved = load_checkpoint(latest_checkpoint(cfg.OUTPUT_DIR))
    plain = Pretrainer(_short_run(tmp_path / "plain", "KNN.PERIOD", "0"))
    assert saved["model"].keys() == plain.checkpoint_dict()["model"].keys()
    assert all(
        torch.isfinite(torch.tensor(r["loss"]))
        for r in _read_metrics(cfg.OUTPUT_DIR)
        if "loss" in r
    )
    torch._dynamo.reset()


def test_byol_aw_step_is_the_official_symmetric_byol_loss(tmp_path):
    """BYOL-AW as methods/BYOL.py runs it: each view (aggressive, weak) through the online network,
    matched to the EMA target's projection of the OTHER view, (2 - 2 cos) summed over the two pairs."""
    from pretrain.methods import msr_loss

    cfg = tiny_config(tmp_path / "run", "METHOD.NAME", "byol", "METHOD.VIEWS", "AW")
    trainer = Pretrainer(cfg)
    assert trainer.settings.layout == "aw" and trainer.settings.method.uses_beta is False
    views, _ = next(iter(trainer.train_loader))
    assert len(views) == 2  # (aggressive, weak)
    state = trainer.state
    state.online.train(), state.target.train()
    torch.manual_seed(0)
    q1, q2, z1, z2 = trainer.settings.method.outputs(state.online, state.target, list(views))
    with torch.no_grad():
        expected = {
            "q1": state.online(views[0])[1],
            "q2": state.online(views[1])[1],
            "z1": state.target(views[0]),
            "z2": state.target(views[1]),
        }
    for name, got in zip(("q1", "q2", "z1", "z2"), (q1, q2, z1, z2)):
        assert torch.allclose(got, expected[name], atol=1e-6), name

    def byol(p, z):
        return (2 - 2 * torch.nn.functional.cosine_similarity(p, z, dim=1)).mean()

    by_hand = byol(q1, z2) + byol(q2, z1)
    assert torch.allclose(msr_loss(q1, q2, z1, z2, beta=0.0).loss, by_hand, atol=1e-6)
