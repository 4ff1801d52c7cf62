"""Pictures: training curves from metrics.jsonl (pretrain/viz/plots.py), the augmentation grid (aug_grid.py)."""

from __future__ import annotations

import importlib.util
import json
import os

import matplotlib.image
import numpy as np
import pytest
import torch

from pretrain.cli import EXIT_USER_ERROR, run_main
from pretrain.config import load_config
from pretrain.utils.errors import UserError
from pretrain.viz.aug_grid import augmentation_grid, grid_views
from pretrain.viz.plots import plot_run, plot_runs, read_metrics, run_labels

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# As the engine writes them: training lines, kNN-only lines, NaN tau (json.dumps writes NaN), a resumed step.
PRETRAIN_LINES = [
    {"step": 0, "epoch": 0, "knn_top1": 17.5},
    {
        "step": 5,
        "epoch": 0,
        "loss": 1.9,
        "loss_weak_aggressive": 1.9,
        "loss_aggressive_aggressive": 0.1,
        "beta": 0.3,
        "tau": float("nan"),
        "lr": 0.4,
        "grad_norm": 2.0,
        "images_per_s": 300.0,
    },
    {
        "step": 10,
        "epoch": 1,
        "loss": 1.5,
        "loss_weak_aggressive": 1.4,
        "loss_aggressive_aggressive": 0.2,
        "beta": 0.2,
        "tau": float("nan"),
        "lr": 0.3,
        "grad_norm": float("nan"),
        "images_per_s": 310.0,
    },
    {"step": 10, "epoch": 1, "knn_top1": 40.0},
    {"step": 10, "epoch": 1, "loss": 1.2, "beta": 0.2, "lr": 0.3},  # resumed run logs step 10 again
]


def _write_metrics(run_dir, records, tail: str = "") -> str:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in records) + tail)
    return str(run_dir)


def _assert_png(path) -> tuple:
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    return image.shape


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        f"{name}_tool", os.path.join(ROOT, "tools", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------- curves
def test_read_metrics_drops_nan_and_keeps_knn_points(tmp_path):
    run = _write_metrics(
        tmp_path / "msr", PRETRAIN_LINES, tail='{"step": 15, "lo'
    )  # last line half-written
    metrics = read_metrics(run)
    assert "tau" not in metrics  # only NaN: no panel
    assert metrics["grad_norm"] == [(5, 2.0)]  # the NaN point is dropped
    assert metrics["knn_top1"] == [(0, 17.5), (10, 40.0)]
    assert metrics["loss"] == [(5, 1.9), (10, 1.2)]  # the later line of a step wins
    assert "step" not in metrics and "epoch" not in metrics


def test_plot_run_writes_a_png_next_to_the_metrics(tmp_path):
    run = _write_metrics(tmp_path / "msr", PRETRAIN_LINES)
    path = plot_run(run)
    assert path == os.path.join(run, "curves.png")
    _assert_png(path)


def test_plot_run_reads_a_linear_evaluation_folder(tmp_path):
    lines = [
        {
            "step": e,
            "epoch": e,
            "lr": 0.1,
            "train_loss": 2.0 / e,
            "train_top1": 50.0 + e,
            "test_top1": 45.0 + e,
            "test_top5": 90.0,
            "best_top1": 45.0 + e,
            "epoch_time_s": 0.1,
        }
        for e in (1, 2, 3)
    ]
    out = tmp_path / "pics" / "lincls.png"  # the folder is created
    assert plot_run(_write_metrics(tmp_path / "lincls", lines), str(out)) == str(out)
    _assert_png(out)


def test_plot_runs_overlays_runs_with_a_default_name(tmp_path):
    byol_lines = [{"step": 1, "epoch": 0, "loss": 2.0}, {"step": 2, "epoch": 0, "loss": 1.0}]
    byol = _write_metrics(tmp_path / "byol", byol_lines)
    msr = _write_metrics(tmp_path / "msr", PRETRAIN_LINES)
    path = plot_runs([byol, msr])
    assert path == os.path.join(str(tmp_path), "curves_byol_vs_msr.png")
    _assert_png(path)
    assert run_labels([str(tmp_path / "a" / "msr"), str(tmp_path / "b" / "msr")]) == [
        "a/msr",
        "b/msr",
    ]


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_missing_or_empty_metrics_is_a_user_error(tmp_path, content):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    with pytest.raises(UserError) as info:
        plot_run(str(tmp_path))
    message = str(info.value)
    assert (
        os.path.join(str(tmp_path), "metrics.jsonl") in message and "tools/pretrain.py" in message
    )


def test_a_broken_line_names_the_file_and_line(tmp_path):
    _write_metrics(
        tmp_path, PRETRAIN_LINES[:1], tail="not json\n" + json.dumps(PRETRAIN_LINES[1]) + "\n"
    )
    with pytest.raises(UserError, match="line 2"):
        plot_run(str(tmp_path))


def test_plot_tool_prints_the_path_and_exits_2_without_a_run(tmp_path, capsys):
    tool = _load_tool("plot")
    missing = str(tmp_path / "no_such_run")
    assert run_main(tool.main, tool.parse_args([missing])) == EXIT_USER_ERROR
    assert os.path.join(missing, "metrics.jsonl") in capsys.readouterr().err
    run = _write_metrics(tmp_path / "msr", PRETRAIN_LINES[:1])  # one panel: kNN only
    out = str(tmp_path / "c.png")
    assert run_main(tool.main, tool.parse_args([run, "--out", out])) == 0
    assert capsys.readouterr().out.strip() == out
    _assert_png(out)


# ---------------------------------------------------------------------------------- augmentation grid
@pytest.fixture(scope="module")
def digits_cfg():
    return load_config("digits_demo.yaml")


def _check_views(grid, num_images: int) -> None:
    """Five uint8 RGB columns per row; the two weak views differ, and t2 changes some weak view."""
    assert len(grid.rows) == len(grid.indices) == len(grid.labels) == num_images
    for row in grid.rows:
        assert len(row) == 5 and all(
            v.dtype == np.uint8 and v.ndim == 3 and v.shape[2] == 3 for v in row
        )
        assert (
            row[1].shape == row[2].shape == row[3].shape == row[4].shape == (32, 32, 3)
        )  # t2 keeps geometry
    assert any(not np.array_equal(row[1], row[3]) for row in grid.rows)  # weak 1 != weak 2
    assert any(not np.array_equal(row[1], row[2]) for row in grid.rows)  # aggressive 1 != weak 1
    assert any(not np.array_equal(row[3], row[4]) for row in grid.rows)  # aggressive 2 != weak 2


def _same_views(a, b) -> bool:
    return all(
        np.array_equal(x, y) for row_a, row_b in zip(a.rows, b.rows) for x, y in zip(row_a, row_b)
    )


def test_grid_views_differ_and_repeat_with_the_seed(digits_cfg):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    grid = grid_views(digits_cfg, num_images=4, seed=0)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random state is untouched
    assert not grid.on_device
    _check_views(grid, 4)
    assert _same_views(grid, grid_views(digits_cfg, num_images=4, seed=0))
    assert not _same_views(grid, grid_views(digits_cfg, num_images=4, seed=1))


def test_grid_views_with_device_augmentation():
    cfg = load_config("digits_demo.yaml", ["AUG.AGGRESSIVE_ON", "device"])
    grid = grid_views(cfg, num_images=4, seed=0)
    assert grid.on_device
    _check_views(grid, 4)
    assert _same_views(grid, grid_views(cfg, num_images=4, seed=0))


def test_augmentation_grid_writes_a_png(digits_cfg, tmp_path):
    out = tmp_path / "sub" / "grid.png"
    assert augmentation_grid(digits_cfg, num_images=2, out_path=str(out)) == str(out)
    _assert_png(out)


def test_show_aug_tool(tmp_path, capsys):
    tool = _load_tool("show_aug")
    out = str(tmp_path / "aug.png")
    args = tool.parse_args(
        [
            "--cfg",
            "digits_demo.yaml",
            "--num-images",
            "2",
            "--out",
            out,
            "AUG.AGGRESSIVE_ON",
            "device",
        ]
    )
    assert run_main(tool.main, args) == 0
    assert capsys.readouterr().out.strip() == out
    _assert_png(out)
    assert (
        run_main(tool.main, tool.parse_args(["--num-images", "0", "--out", out])) == EXIT_USER_ERROR
    )
    assert "at least 1" in capsys.readouterr().err
