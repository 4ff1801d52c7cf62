"""Smoke run of the demo tool (what `make demo` runs), shortened to a few steps."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_prints_the_results_table(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--output-dir", str(out),
           "MODEL.WIDTH", "4", "MODEL.HIDDEN_DIM", "32", "SOLVER.MAX_STEPS", "3", "SOLVER.EPOCHS", "1",
           "SOLVER.WARMUP_EPOCHS", "0", "DATA.NUM_WORKERS", "0", "KNN.PERIOD", "1", "PROGRESS_BAR", "False"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for row in ("raw pixels", "same network at initialisation", "BYOL", "MSR"):
        assert row in run.stdout
    results = json.loads((out / "results.json").read_text())
    assert [r["steps"] for r in results["rows"]] == [3, 3]
    assert results["raw_pixels"] > 80.0  # raw pixels separate digits well: a sanity check of the kNN code
    for row in results["rows"]:
        assert row["curve"][0][0] == 0 and row["curve"][-1][0] == 3  # random-init point and final point
        assert os.path.isfile(os.path.join(row["output_dir"], "checkpoint_0000003.pth"))
