"""The online linear probe: no effect on pretraining, its records, exact resume, labelled data only."""

import json
import shutil

import pytest
import torch
from helpers import TINY_CPU_RUN, overrides

from pretrain.config import ConfigError, load_config
from pretrain.engine.checkpoint import load_checkpoint
from pretrain.engine.checkpointer import list_checkpoints
from pretrain.engine.probe import OnlineProbe, probe_view
from pretrain.engine.trainer import Pretrainer
from pretrain.modeling.networks import ResNet


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _cfg(output_dir, *extra):
    settings = {"SOLVER.EPOCHS": 2, "KNN.PERIOD": 1, "LOG_PERIOD": 7}
    settings.update({"CHECKPOINT.PERIOD": 1, "CHECKPOINT.KEEP_LAST": 0})
    return load_config(
        "digits_demo.yaml",
        overrides(TINY_CPU_RUN, settings, {"OUTPUT_DIR": output_dir}) + list(extra),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run without and with the probe."""
    root = tmp_path_factory.mktemp("probe")
    for name, enabled in (("plain", "False"), ("probe", "True")):
        Pretrainer(_cfg(str(root / name), "PROBE.ENABLED", enabled)).train()
    return root


def test_the_probe_changes_nothing_of_pretraining(runs):
    """No gradient and no BatchNorm update reach the encoder, and no random number is drawn differently:
    the networks and optimizer end bitwise equal with and without the probe."""
    plain, probed = (
        load_checkpoint(list_checkpoints(str(runs / n))[-1]) for n in ("plain", "probe")
    )
    for part in ("model", "target"):
        for key, value in plain[part].items():
            assert torch.equal(value, probed[part][key]), f"{part}.{key} differs"
    assert plain["probe"] is None and probed["probe"]["head"]["1.weight"].shape == (10, 32)


def test_a_probe_step_leaves_the_encoder_untouched():
    encoder = ResNet("resnet18", width=4, stem="imagenet").train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    cfg = load_config("digits_demo.yaml")
    probe = OnlineProbe(encoder.out_dim, 10, cfg.PROBE, torch.device("cpu"))
    head_before = probe.head[1].weight.clone()
    top1 = probe.step(encoder, torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))
    assert 0 <= top1 <= 100 and encoder.training
    assert all(p.grad is None for p in encoder.parameters())
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())
    assert not torch.equal(probe.head[1].weight, head_before)  # the probe itself learned


def test_records_hold_the_train_and_test_accuracy(runs):
    records = read_jsonl(str(runs / "probe" / "metrics.jsonl"))
    steps = [r for r in records if "loss" in r]
    knn = [r for r in records if "knn_top1" in r]
    assert steps and all(0 <= r["probe_train_top1"] <= 100 for r in steps)
    assert len(knn) == 3 and all(0 <= r["probe_top1"] <= 100 for r in knn)  # at start, epochs 1, 2
    assert knn[-1]["probe_top1"] > 10  # above chance on 10 classes after 2 epochs
    plain = read_jsonl(str(runs / "plain" / "metrics.jsonl"))
    assert not any("probe_top1" in r or "probe_train_top1" in r for r in plain)


def test_a_resumed_run_continues_the_probe_exactly(runs, tmp_path):
    first_epoch, last = list_checkpoints(str(runs / "probe"))[:2]
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(first_epoch, resumed)
    Pretrainer(_cfg(str(resumed), "PROBE.ENABLED", "True"), resume=True).train()
    reference, other = load_checkpoint(last), load_checkpoint(list_checkpoints(str(resumed))[-1])
    assert reference["step"] == other["step"]
    for key, value in reference["probe"]["head"].items():
        assert torch.equal(value, other["probe"]["head"][key])
    ref_records = [r for r in read_jsonl(str(runs / "probe" / "metrics.jsonl")) if "knn_top1" in r]
    new_records = [r for r in read_jsonl(str(resumed / "metrics.jsonl")) if "knn_top1" in r]
    assert new_records[-1]["probe_top1"] == ref_records[-1]["probe_top1"]


def test_unlabelled_pretraining_data_is_refused():
    with pytest.raises(ConfigError, match="PROBE.ENABLED needs a label.*train\\+unlabeled"):
        load_config("stl10_200ep.yaml", ["PROBE.ENABLED", "True"])


def test_the_probe_sees_the_least_augmented_view():
    views = [torch.full((1,), float(i)) for i in range(4)]
    assert probe_view(views, "multi_stage") is views[0]  # w1
    assert probe_view(views[:2], "aw") is views[1]  # the weak view
    assert probe_view(views[:2], "aa") is views[0]  # no weak view: the first
