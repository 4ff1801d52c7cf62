"""Smoke run of the demo tool (what `make demo` runs), shortened to a few steps and iterations."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_runs_the_whole_chain_and_prints_the_tables(tmp_path):
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "demo.py"),
        "--output-dir",
        str(out),
        "MODEL.WIDTH",
        "4",
        "MODEL.HIDDEN_DIM",
        "32",
        "SOLVER.MAX_STEPS",
        "3",
        "SOLVER.EPOCHS",
        "1",
        "SOLVER.WARMUP_EPOCHS",
        "0",
        "DATA.NUM_WORKERS",
        "0",
        "KNN.PERIOD",
        "1",
        "PROGRESS_BAR",
        "False",
        "--det-opts",
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.STEPS",
        "(1,)",
        "SOLVER.WARMUP_ITERS",
        "1",
        "TEST.PRECISE_BN.NUM_ITER",
        "1",
    ]
    run = subprocess.run(
        cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for text in (
        "raw pixels",
        "same network at initialisation",
        "BYOL",
        "MSR",
        "linear top-1",
        "Conversion to Detectron2 verified",
        "| Mask R-CNN | MSR |",
        "| Mask R-CNN | random init |",
        "| Keypoint R-CNN | MSR |",
        "| Keypoint R-CNN | random init |",
    ):
        assert text in run.stdout, text
    results = json.loads((out / "results.json").read_text())
    assert [r["steps"] for r in results["rows"]] == [3, 3]
    assert (
        results["raw_pixels"] > 80.0
    )  # raw pixels separate digits well: a sanity check of the kNN code
    for row in results["rows"]:
        assert (
            row["curve"][0][0] == 0 and row["curve"][-1][0] == 3
        )  # random-init point and final point
        assert 0.0 <= row["linear_top1"] <= 100.0
    assert max(results["verification"].values()) <= 1e-4
    tasks = {(r["model"], r["init"]): r for r in results["detection"]}
    assert set(tasks) == {
        (m, i) for m in ("Mask R-CNN", "Keypoint R-CNN") for i in ("MSR", "random init")
    }
    assert all("segm" in r for (m, _), r in tasks.items() if m == "Mask R-CNN")
    assert all("keypoints" in r for (m, _), r in tasks.items() if m == "Keypoint R-CNN")
    for key in ("curves", "augmentation_grid"):  # both pictures written, as PNG files
        with open(results["pictures"][key], "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n", key
    assert "Pictures:" in run.stdout
