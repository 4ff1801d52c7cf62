"""Images per second of whole pretraining steps (real loader + step) against the number of loader workers.

A ``pretrain.engine.trainer.Pretrainer`` is built on the embedded digits data from
``configs/pretrain/digits_demo.yaml`` (narrow ResNet-18, 32 px, batch 128) for each method,
``AUG.AGGRESSIVE_ON`` mode and ``DATA.NUM_WORKERS`` value; one untimed epoch starts the workers
and warms up, then ``--epochs`` epochs of ``train_one_epoch`` are timed (loader waits, transfer,
device-side augmentation and optimizer steps: what a real run sees). The loader alone (one epoch
iterated without training) is timed as well, to show which side limits the throughput.

``AUG.AGGRESSIVE_ON device`` is tried too; while the engine does not support it yet, the table
says "not yet supported" with the error.

    .venv/bin/python benchmarks/bench_loader_scaling.py                    # workers 0 1 2, ~2 min on 2 cores
    .venv/bin/python benchmarks/bench_loader_scaling.py --workers 0 4 8 --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    machine_info,
    markdown_table,
    new_run,
    publish,
)
from pretrain.config import load_config  # noqa: E402
from pretrain.engine.trainer import Pretrainer  # noqa: E402

NAME = "bench_loader_scaling"
TITLE = "Loader scaling: whole pretraining steps on digits"
METHODS = {
    "msr": ["METHOD.NAME", "msr"],
    "byol_aa": ["METHOD.NAME", "byol", "METHOD.VIEWS", "AA"],
}
LABELS = {"msr": "MSR", "byol_aa": "BYOL AA"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 1, 2], help="DATA.NUM_WORKERS values"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["cpu", "device"],
        choices=["cpu", "device"],
        help="AUG.AGGRESSIVE_ON values",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--epochs", type=int, default=1, help="timed epochs (10 steps each at batch 128)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"])
    return parser.parse_args(argv)


def build(method: str, mode: str, workers: int, args, output_dir: str) -> Pretrainer:
    opts = [
        "DATA.NUM_WORKERS",
        str(workers),
        "AUG.AGGRESSIVE_ON",
        mode,
        "SOLVER.BATCH_SIZE",
        str(args.batch),
        "SOLVER.EPOCHS",
        str(args.epochs + 1),
        "SOLVER.MAX_STEPS",
        "0",
        "SOLVER.WARMUP_EPOCHS",
        "0",
        "SOLVER.AMP",
        args.amp,
        "KNN.PERIOD",
        "0",
        "PROGRESS_BAR",
        "False",
        "DEVICE",
        args.device,
        "OUTPUT_DIR",
        output_dir,
    ] + METHODS[method]
    return Pretrainer(load_config("digits_demo.yaml", opts))


def shut_down(trainer) -> None:
    """Stop the persistent loader workers and close the TensorBoard writer."""
    if trainer is None:
        return
    iterator = getattr(trainer.train_loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    trainer.metrics.close()


def measure(method: str, mode: str, workers: int, args, tmp: str, threads: int) -> dict:
    torch.set_num_threads(threads)  # Pretrainer lowers it when workers share the cores; start equal
    trainer = None
    try:
        trainer = build(
            method, mode, workers, args, os.path.join(tmp, f"{method}_{mode}_{workers}")
        )
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        trainer.train_one_epoch()  # starts the workers, warms up
        sync()
        steps_before = trainer.state.step
        tic = time.perf_counter()
        for _ in range(args.epochs):
            trainer.train_one_epoch()
        sync()
        elapsed = time.perf_counter() - tic
        images = (trainer.state.step - steps_before) * args.batch
        tic = time.perf_counter()
        loaded = sum(views[0].shape[0] for views, _ in trainer.train_loader)
        loader_s = time.perf_counter() - tic
        return {
            "method": method,
            "mode": mode,
            "workers": workers,
            "status": "ok",
            "images_per_s": images / elapsed,
            "loader_images_per_s": loaded / loader_s,
            "compute_threads": torch.get_num_threads(),
            "timed_images": images,
            "timed_s": elapsed,
        }
    except Exception as err:  # noqa: BLE001 - device mode before the engine supports it
        if mode != "device":
            raise
        message = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        return {
            "method": method,
            "mode": mode,
            "workers": workers,
            "status": "not yet supported",
            "error": message,
        }
    finally:
        shut_down(trainer)
        del trainer
        gc.collect()


def render(run: dict) -> str:
    p = run["params"]
    headers = [
        "method",
        "AUG.AGGRESSIVE_ON",
        "DATA.NUM_WORKERS",
        "compute threads",
        "images / s (whole steps)",
        "loader alone, images / s",
    ]
    rows, errors = [], {}
    for r in run["results"]:
        if r["status"] == "ok":
            rows.append(
                [
                    LABELS[r["method"]],
                    r["mode"],
                    r["workers"],
                    r["compute_threads"],
                    f"{r['images_per_s']:.0f}",
                    f"{r['loader_images_per_s']:.0f}",
                ]
            )
        else:
            rows.append(
                [LABELS[r["method"]], r["mode"], r["workers"], "-", "not yet supported", "-"]
            )
            errors.setdefault(r["error"], None)
    text = (
        f"digits_demo.yaml (ResNet-18 width 16, ImageNet stem, 32 px), batch {p['batch']}, device "
        f"{p['device']}, AMP {p['amp']}; {p['epochs']} timed epoch(s) after one warm-up epoch.\n\n"
        + markdown_table(headers, rows)
    )
    for message in errors:
        text += f'\n\n"not yet supported": trying AUG.AGGRESSIVE_ON device raised `{message}`.'
    return text


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    info = machine_info(args.device)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            for method in args.methods:
                for workers in args.workers:
                    res = measure(method, mode, workers, args, tmp, threads)
                    results.append(res)
                    shown = (
                        f"{res['images_per_s']:.0f} images/s (loader alone {res['loader_images_per_s']:.0f})"
                        if res["status"] == "ok"
                        else f"not yet supported: {res['error']}"
                    )
                    print(f"{LABELS[method]:8s} {mode:6s} workers={workers}: {shown}", flush=True)
    params = {k: v for k, v in vars(args).items()}
    run = new_run(info, params, results, start, ignore=("epochs",))
    print(publish(NAME, run, render, TITLE))


if __name__ == "__main__":
    main()
