"""How many bytes a run writes to a file that stdout and stderr are sent to (SLURM output, CI, ``> file``).

Two runs on the embedded digits, each with its output redirected to a file, as a batch job would:
- pretraining for 120 steps (batch 64), a record every 20 steps (LOG_PERIOD 20);
- a linear evaluation of the resulting checkpoint for 5 epochs of 169 iterations (batch 8).

The goal (issue 12): at most 40 bytes per pretraining step and 2 KB per evaluation epoch. ``--label``
names the code version measured (e.g. before / after a change); runs with different labels are kept
side by side.

    python benchmarks/bench_log_size.py --label after
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    ROOT,
    fmt,
    goal_mark,
    machine_info,
    markdown_table,
    new_run,
    publish,
)

NAME = "bench_log_size"
TITLE = "Output written to a file (not a terminal)"
STEPS, LOG_PERIOD, EPOCHS, LINCLS_BATCH = 120, 20, 5, 8
PRETRAIN_GOAL, LINCLS_GOAL = 40.0, 2048.0  # bytes per pretraining step, per evaluation epoch
TINY = [
    "MODEL.WIDTH", "4", "MODEL.HIDDEN_DIM", "32", "MODEL.OUT_DIM", "16", "SOLVER.BATCH_SIZE", "64",
    "SOLVER.WARMUP_EPOCHS", "0", "DATA.NUM_WORKERS", "0", "DEVICE", "cpu",
]  # fmt: skip


def run_to_file(argv: list, path: str) -> int:
    """Run a tool with stdout and stderr sent to ``path``; returns the bytes written there."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    with open(path, "wb") as handle:
        subprocess.run(
            [sys.executable, *argv], stdout=handle, stderr=subprocess.STDOUT, check=True, env=env,
            cwd=ROOT,
        )  # fmt: skip
    return os.path.getsize(path)


def measure(folder: str) -> dict:
    pretrain_dir = os.path.join(folder, "pretrain")
    pretrain_bytes = run_to_file(
        [
            "tools/pretrain.py", "--cfg", "digits_demo.yaml", *TINY, "SOLVER.MAX_STEPS", str(STEPS),
            "LOG_PERIOD", str(LOG_PERIOD), "KNN.PERIOD", "0", "OUTPUT_DIR", pretrain_dir,
        ],
        os.path.join(folder, "pretrain.out"),
    )  # fmt: skip
    checkpoint = sorted(n for n in os.listdir(pretrain_dir) if n.endswith(".pth"))[-1]
    lincls_bytes = run_to_file(
        [
            "tools/lincls.py", os.path.join(pretrain_dir, checkpoint), "--cfg", "digits.yaml",
            "LINCLS.EPOCHS", str(EPOCHS), "LINCLS.BATCH_SIZE", str(LINCLS_BATCH),
            "OUTPUT_DIR", os.path.join(folder, "lincls"),
        ],
        os.path.join(folder, "lincls.out"),
    )  # fmt: skip
    return {
        "pretrain_bytes": pretrain_bytes,
        "pretrain_bytes_per_step": pretrain_bytes / STEPS,
        "lincls_bytes": lincls_bytes,
        "lincls_bytes_per_epoch": lincls_bytes / EPOCHS,
    }


def render(run: dict) -> str:
    rows = [
        (
            r["label"],
            f"{r['pretrain_bytes'] / 1024:.1f} KB",
            goal_mark(r["pretrain_bytes_per_step"], PRETRAIN_GOAL),
            f"{r['lincls_bytes'] / 1024:.1f} KB",
            goal_mark(r["lincls_bytes_per_epoch"], LINCLS_GOAL),
        )
        for r in run["results"]
    ]
    table = markdown_table(
        (
            "code",
            f"pretraining, {STEPS} steps",
            "bytes per step",
            f"linear eval., {EPOCHS} epochs",
            "bytes per epoch",
        ),
        rows,
    )
    return (
        table
        + f"\n\nGoal: <= {fmt(PRETRAIN_GOAL, 0)} bytes per step, <= {fmt(LINCLS_GOAL, 0)} per epoch."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label", required=True, help="the code version measured (e.g. after)")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        figures = dict(label=args.label, **measure(folder))
    print(figures)
    params = {"label": args.label, "steps": STEPS, "log_period": LOG_PERIOD, "epochs": EPOCHS}
    run = new_run(machine_info(), params, [figures], start)
    print(publish(NAME, run, render, TITLE))


if __name__ == "__main__":
    main()
