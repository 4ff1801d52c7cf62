"""Config resolution, inheritance, overrides, validation errors and dry runs of every shipped config."""

import os
import subprocess
import sys

import pytest

from pretrain.cli import dry_run_text
from pretrain.config import (
    CONFIG_DIR,
    ConfigError,
    derived_values,
    effective_lr,
    load_config,
    resolve_config_path,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))


def test_bare_name_and_path_resolve_to_the_same_file():
    assert resolve_config_path("cifar10_200ep.yaml") == os.path.join(
        CONFIG_DIR, "cifar10_200ep.yaml"
    )
    assert resolve_config_path("cifar10_200ep") == os.path.join(CONFIG_DIR, "cifar10_200ep.yaml")
    path = os.path.join(CONFIG_DIR, "in100_100ep.yaml")
    assert resolve_config_path(path) == path


def test_missing_config_suggests_closest():
    with pytest.raises(ConfigError, match="in1k_200ep.yaml"):
        resolve_config_path("in1k_20ep.yaml")


def test_base_inheritance_and_overrides():
    cfg = load_config(
        "cifar100_800ep.yaml", ["SOLVER.BASE_LR", "0.05", "MSR.STOP_GRAD_AA", "False"]
    )
    assert cfg.DATA.NAME == "cifar100" and cfg.SOLVER.EPOCHS == 800  # own file
    assert cfg.MSR.BETA_BASE == 0.3 and cfg.DATA.IMAGE_SIZE == 32  # Base-CIFAR.yaml
    assert (
        cfg.MODEL.HIDDEN_DIM == 1024 and cfg.SOLVER.WEIGHT_DECAY == 5e-4
    )  # Base-ResNet18-small.yaml
    assert cfg.SOLVER.BASE_LR == 0.05 and cfg.MSR.STOP_GRAD_AA is False  # overrides
    assert cfg.is_frozen()


@pytest.mark.parametrize(
    "opts, message",
    [
        (["SOLVER.BASE_LRR", "0.1"], "Did you mean 'SOLVER.BASE_LR'"),
        (["MSR.TAU_BASE", "0.99"], "Did you mean 'EMA.TAU_BASE'"),
        (["SOLVER.BASE_LR", "-1"], "SOLVER.BASE_LR must be > 0"),
        (["MSR.BETA_BASE", "1.5"], r"MSR.BETA_BASE must be in \[0, 1\]"),
        (["METHOD.NAME", "mrs"], "Did you mean 'msr'"),
        (["SOLVER.EPOCHS", "ten"], "SOLVER.EPOCHS must be an integer, got .ten."),
        (["SOLVER.BASE_LR"], "has no value"),
    ],
)
def test_bad_overrides_are_clear_errors(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_config("cifar10_200ep.yaml", opts)


def test_unknown_key_in_file_names_the_nearest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"_BASE_: {os.path.join(CONFIG_DIR, 'cifar10_200ep.yaml')}\nSOLVER:\n  WEIGHT_DECAI: 0.1\n"
    )
    with pytest.raises(ConfigError, match="SOLVER.WEIGHT_DECAY"):
        load_config(str(path))


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("SEED: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))


def test_in1k_settings_and_derived_values():
    cfg = load_config("in1k_200ep.yaml")
    assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.WEIGHT_DECAY) == (
        "lars",
        2048,
        1e-6,
    )
    assert (
        cfg.SOLVER.AMP == "fp16"
        and cfg.SOLVER.WARMUP_EPOCHS == 10
        and cfg.MODEL.BACKBONE == "resnet50"
    )
    assert effective_lr(cfg) == pytest.approx(0.6 * 2048 / 256)
    assert effective_lr(load_config("in1k_100ep.yaml")) == pytest.approx(0.9 * 2048 / 256)
    derived = derived_values(cfg, 1281167)
    assert (
        derived["steps_per_epoch"] == 625
        and derived["total_steps"] == 125000
        and derived["warmup_steps"] == 6250
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_dry_runs(name):
    text = dry_run_text(load_config(name))
    assert "effective_lr" in text and "total_steps" in text


def test_ablations_select_the_paper_variants():
    assert (lambda c: (c.METHOD.NAME, c.METHOD.VIEWS))(load_config("ablation_byol_aa.yaml")) == (
        "byol",
        "AA",
    )
    assert (lambda c: (c.METHOD.NAME, c.METHOD.VIEWS))(load_config("ablation_byol_aw.yaml")) == (
        "byol",
        "AW",
    )
    assert load_config("ablation_msr_fixed_beta.yaml").MSR.BETA_SCHEDULE == "constant"
    assert load_config("ablation_simsiam_msr.yaml").METHOD.NAME == "simsiam_msr"


def test_cli_dry_run_exits_zero_and_bad_key_exits_two():
    tool = os.path.join(ROOT, "tools", "pretrain.py")
    ok = subprocess.run(
        [sys.executable, tool, "--cfg", "in1k_200ep.yaml", "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "effective_lr: 4.8" in ok.stdout
    bad = subprocess.run(
        [sys.executable, tool, "--cfg", "in1k_200ep.yaml", "--dry-run", "SOLVER.LR", "1"],
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 2
        and "Unknown config key 'SOLVER.LR'" in bad.stderr
        and "Traceback" not in bad.stderr
    )
