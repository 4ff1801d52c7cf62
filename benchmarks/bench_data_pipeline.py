"""CPU cost of the loader's transform per image, on one core: BYOL vs MSR with t2 on the CPU or the device.

Everything runs in this process with ``torch.set_num_threads(1)`` and no loader workers, so a
figure is the time one loader worker spends on one image (all of its views), in milliseconds:

- BYOL "AA" (``METHOD.NAME byol METHOD.VIEWS AA``, t2 on the CPU): two views, each t1 then t2,
  then ToTensor + Normalize; the cheapest CPU baseline.
- MSR, CPU t2 (``AUG.AGGRESSIVE_ON cpu``): two weak views and an aggressive view from each (4 views).
- MSR, device t2 (``AUG.AGGRESSIVE_ON device``): only the two weak views as uint8 tensors; the
  aggressive views are made later on the training device, so this is the whole CPU-side cost.
- When ``pretrain/data/device_augment.py`` exists: what ``DeviceAggressiveAugment`` costs per image when
  the "device" is this CPU (one thread, batches of ``--batch``; both aggressive views and the
  normalisation of both weak views), or the GPU with ``--device cuda``.

Inputs are random RGB PIL images a bit larger than the crop (40, 80 and 256 px for 32, 64 and
224 px crops). The configurations take turns every 8 images (so machine noise hits them alike),
every repetition replays the same random draws, and the figures are medians over ``--repeats``
repetitions (ratios are taken within a repetition, then their median).

    .venv/bin/python benchmarks/bench_data_pipeline.py                  # 32, 64, 224 px, ~1 min
    .venv/bin/python benchmarks/bench_data_pipeline.py --device cuda    # device t2 column on the GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import (  # noqa: E402
    fmt,
    goal_mark,
    machine_info,
    markdown_table,
    new_run,
    publish,
    spread,
)
from pretrain.config import load_config  # noqa: E402
from pretrain.data.augment import build_pretrain_transform  # noqa: E402

NAME = "bench_data_pipeline"
TITLE = "Data pipeline: CPU cost per image (one core)"
GOAL_MSR_CPU = 1.15  # MSR with CPU t2 / BYOL
GOAL_MSR_DEVICE = 0.15  # MSR with device t2, loader side / BYOL
SOURCE_SIZE = {32: 40, 64: 80, 224: 256}
DEFAULT_IMAGES = {
    32: 256,
    64: 128,
    224: 32,
}  # images per repetition (about 0.5-1 s for all configurations)
CHUNK = 8  # images per configuration before switching to the next one

CONFIGS = {  # name -> overrides
    "byol_aa_cpu": ["METHOD.NAME", "byol", "METHOD.VIEWS", "AA", "AUG.AGGRESSIVE_ON", "cpu"],
    "msr_cpu": ["METHOD.NAME", "msr", "AUG.AGGRESSIVE_ON", "cpu"],
    "msr_device": ["METHOD.NAME", "msr", "AUG.AGGRESSIVE_ON", "device"],
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[32, 64, 224], help="crop sizes in pixels"
    )
    parser.add_argument(
        "--repeats", type=int, default=15, help="repetitions; the median is reported"
    )
    parser.add_argument(
        "--images",
        type=int,
        default=0,
        help="images per repetition (0: 256 / 128 / 32 at 32 / 64 / 224 px)",
    )
    parser.add_argument("--batch", type=int, default=64, help="batch of the device t2 measurement")
    parser.add_argument(
        "--device", default="cpu", help="where DeviceAggressiveAugment runs (cpu or cuda)"
    )
    return parser.parse_args(argv)


def source_images(size: int, count: int = 16, seed: int = 0):
    side = SOURCE_SIZE.get(size, round(size * 1.25))
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8))
        for _ in range(count)
    ], side


def config(size: int, overrides):
    return load_config(None, ["DATA.IMAGE_SIZE", str(size)] + list(overrides))


def device_t2_runner(size: int, images, batch: int, device: str):
    """A function doing DeviceAggressiveAugment's work for one batch, or (None, reason) when unavailable."""
    try:
        from pretrain.data.device_augment import DeviceAggressiveAugment
    except ImportError as err:
        return None, f"pretrain/data/device_augment.py not available ({err})"
    try:
        cfg = config(size, CONFIGS["msr_device"])
        aug = DeviceAggressiveAugment.from_config(cfg)
        if hasattr(aug, "to"):
            aug = aug.to(device)
        weak = build_pretrain_transform(cfg)
        torch.manual_seed(0)
        pairs = [weak(images[i % len(images)]) for i in range(batch)]
        w1 = torch.stack([p[0] for p in pairs]).to(device)
        w2 = torch.stack([p[1] for p in pairs]).to(device)
        forward = aug if isinstance(aug, torch.nn.Module) else aug.forward

        def run():
            with torch.no_grad():
                forward(w1), forward(w2), aug.normalize(w1), aug.normalize(w2)

        run()  # fail here, not in the timed loop
        return run, None
    except Exception as err:  # noqa: BLE001 - report, do not hide the other columns
        return None, f"DeviceAggressiveAugment failed: {type(err).__name__}: {err}"


def measure_size(size: int, args) -> dict:
    """ms per image of each configuration, finely interleaved so that machine noise hits all alike.

    A repetition walks through ``count`` images in chunks of ``CHUNK``; each chunk is run by every
    configuration in turn, each with its own random stream (restarted from seed 0 every
    repetition, so every repetition does the same random work). Ratios are taken within a
    repetition, then the median over repetitions is reported.
    """
    images, side = source_images(size)
    count = args.images or DEFAULT_IMAGES.get(size, 128)
    transforms = {
        name: build_pretrain_transform(config(size, over)) for name, over in CONFIGS.items()
    }
    device_run, device_note = device_t2_runner(size, images, args.batch, args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    torch.manual_seed(0)
    seed_state = torch.get_rng_state()
    for transform in transforms.values():  # warm-up
        for index in range(min(count, 32)):
            transform(images[index % len(images)])
    if device_run is not None:
        device_run()
    per_image = {name: [] for name in transforms}
    if device_run is not None:
        per_image["device_t2"] = []
    for _ in range(args.repeats):
        states = {name: seed_state.clone() for name in transforms}
        totals = {name: 0.0 for name in transforms}
        for first in range(0, count, CHUNK):
            chunk = [images[i % len(images)] for i in range(first, min(first + CHUNK, count))]
            for name, transform in transforms.items():
                torch.set_rng_state(states[name])
                tic = time.perf_counter()
                for img in chunk:
                    transform(img)
                totals[name] += time.perf_counter() - tic
                states[name] = torch.get_rng_state()
        for name in transforms:
            per_image[name].append(totals[name] / count * 1e3)
        if device_run is not None:
            torch.manual_seed(0)
            sync()
            tic = time.perf_counter()
            device_run()
            sync()
            per_image["device_t2"].append((time.perf_counter() - tic) / args.batch * 1e3)

    def ratio(name):
        return statistics.median(a / b for a, b in zip(per_image[name], per_image["byol_aa_cpu"]))

    result = {
        "size": size,
        "source_size": side,
        "images_per_repeat": count,
        "ms_per_image": {name: statistics.median(v) for name, v in per_image.items()},
        "min_ms_per_image": {name: min(v) for name, v in per_image.items()},
        "spread": {name: spread(v) for name, v in per_image.items()},
        "ratio_msr_cpu_over_byol": ratio("msr_cpu"),
        "ratio_msr_device_over_byol": ratio("msr_device"),
    }
    if device_run is not None:
        result["ratio_msr_device_plus_t2_over_byol"] = statistics.median(
            (a + b) / c
            for a, b, c in zip(
                per_image["msr_device"], per_image["device_t2"], per_image["byol_aa_cpu"]
            )
        )
    else:
        result["device_t2_note"] = device_note
    return result


def render(run: dict) -> str:
    dev = run["params"]["device"]
    t2_label = "device t2 run on the CPU" if dev == "cpu" else f"device t2 run on {dev}"
    headers = [
        "crop (source) px",
        "BYOL AA, CPU t2",
        "MSR, CPU t2",
        "MSR, device t2: loader side",
        f"{t2_label} (batch {run['params']['batch']})",
        f"MSR-CPU / BYOL (goal <= {GOAL_MSR_CPU})",
        f"MSR-device / BYOL (goal <= {GOAL_MSR_DEVICE})",
    ]
    rows, notes = [], set()
    for res in run["results"]:
        ms = res["ms_per_image"]
        t2 = fmt(ms.get("device_t2"))
        if "device_t2" not in ms:
            notes.add(res.get("device_t2_note", "not measured"))
        rows.append(
            [
                f"{res['size']} ({res['source_size']})",
                fmt(ms["byol_aa_cpu"]),
                fmt(ms["msr_cpu"]),
                fmt(ms["msr_device"]),
                t2,
                goal_mark(res["ratio_msr_cpu_over_byol"], GOAL_MSR_CPU),
                goal_mark(res["ratio_msr_device_over_byol"], GOAL_MSR_DEVICE),
            ]
        )
    worst = max(max(res["spread"].values()) for res in run["results"])
    text = (
        "Milliseconds per image (all of its views), one CPU thread, median of "
        f"{run['params']['repeats']} repetitions (single repetitions differ by up to {worst * 100:.0f} % on "
        "this machine; the configurations take turns every 8 images and each ratio is the median of "
        "per-repetition ratios, which cancels most of that noise).\n\n"
        + markdown_table(headers, rows)
    )
    combined = [res for res in run["results"] if "ratio_msr_device_plus_t2_over_byol" in res]
    if combined and run["params"].get("device", "cpu") != "cpu":
        text += (
            "\n\nThe device t2 column is time on the GPU per image (batched), which the training step overlaps "
            "with nothing else on the CPU: the loader's CPU cost per image is the 'loader side' column alone."
        )
    elif combined:
        text += (
            "\n\nWith no accelerator, device t2 runs on the training CPU; then the whole MSR cost per image "
            "(loader side + device t2 on the CPU) relative to BYOL is: "
            + ", ".join(
                f"{res['size']} px {res['ratio_msr_device_plus_t2_over_byol']:.2f}"
                for res in combined
            )
            + "."
        )
    for note in sorted(notes):
        text += f"\n\nDevice t2 column: {note}."
    return text


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(1)
    info = machine_info(args.device)
    results = []
    for size in args.sizes:
        res = measure_size(size, args)
        results.append(res)
        ms = res["ms_per_image"]
        print(
            f"{size:4d} px: "
            + ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items())
            + f" | MSR-CPU/BYOL {res['ratio_msr_cpu_over_byol']:.3f}, "
            f"MSR-device/BYOL {res['ratio_msr_device_over_byol']:.3f}",
            flush=True,
        )
    params = {
        "sizes": args.sizes,
        "repeats": args.repeats,
        "images": args.images,
        "batch": args.batch,
        "device": args.device,
        "threads": 1,
    }
    run = new_run(info, params, results, start, ignore=("repeats", "images"))
    print(publish(NAME, run, render, TITLE))


if __name__ == "__main__":
    main()
