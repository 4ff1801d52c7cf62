"""Time of one training step, MSR vs BYOL (AW and AA): same model, batch, device; pre-made tensors, no loader.

Each method's state (online and target networks, optimizer, GradScaler, step settings) is built by
``pretrain.engine.trainer.Pretrainer`` from the same config and seed, so all three start from the same
weights; ``pretrain.engine.trainer.train_step`` is then timed on fixed random views already on the device
(4 views for MSR, 2 for BYOL "AW" and "AA"; BYOL "AW" is the official code's: one aggressive and
one weak view of independent crops; runs written before 2026-12-02 measured "AW" as aggressive
online / weak target views, 4 views, which is MSR with beta 0). After ``--warmup`` steps per method, the methods
take turns step by step (so drift affects them alike) and the median of ``--steps`` steps is
reported, with the ratio MSR / BYOL (goal <= 1.02; the paper reports <= 1.095).

    .venv/bin/python benchmarks/bench_train_step.py                                   # CPU defaults, ~1 min
    .venv/bin/python benchmarks/bench_train_step.py --device cuda --amp bf16 --backbone resnet50 \\
        --width 64 --stem imagenet --image-size 224 --batch 128                       # a GPU figure
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    goal_mark,
    machine_info,
    markdown_table,
    new_run,
    publish,
    spread,
)
from pretrain.config import load_config  # noqa: E402
from pretrain.data.datasets import DIGITS_TRAIN_SIZE  # noqa: E402
from pretrain.engine.trainer import Pretrainer, train_step  # noqa: E402
from pretrain.modeling.networks import build_encoder  # noqa: E402

NAME = "bench_train_step"
TITLE = "Training step: MSR vs BYOL (no loader)"
GOAL = 1.02
SUPERVISED = "supervised (ceiling)"
# MSR's work per image in forward-pass units (a backward costs about two forwards): 2 x (1 + 2) + 2 x 1 = 8,
# against 3 for a supervised step.
MSR_COST_UNITS = 8 / 3
PAPER = 1.095
METHODS = {  # label -> (overrides, number of views)
    "MSR": (["METHOD.NAME", "msr"], 4),
    "BYOL AW": (["METHOD.NAME", "byol", "METHOD.VIEWS", "AW"], 2),
    "BYOL AA": (["METHOD.NAME", "byol", "METHOD.VIEWS", "AA"], 2),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backbone", default="resnet18", choices=["resnet18", "resnet34", "resnet50"]
    )
    parser.add_argument(
        "--width", type=int, default=32, help="channels of the first stage (64 = standard)"
    )
    parser.add_argument("--stem", default="imagenet", choices=["cifar", "imagenet"])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="MODEL.COMPILE true (torch.compile the networks)"
    )
    parser.add_argument(
        "--optimizer-impl",
        default="auto",
        choices=["auto", "fused", "foreach", "for_loop"],
        help="SOLVER.OPTIMIZER_IMPL",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also time a supervised step (one view, encoder + linear classifier): the ceiling",
    )
    parser.add_argument(
        "--steps", type=int, default=40, help="timed steps per method (median reported)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per method first")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: leave the default)"
    )
    return parser.parse_args(argv)


def head_dims(backbone: str):
    """The projector/predictor sizes of the paper: 4096-256 for ResNet-50, 1024-128 for ResNet-18/34."""
    return (4096, 256) if backbone == "resnet50" else (1024, 128)


def build(method_overrides, args, output_dir: str) -> Pretrainer:
    hidden, out = head_dims(args.backbone)
    # The loader batch must fit the digits data (1347 images); the step itself uses the tensors given
    # to it, so only the learning rate (irrelevant for timing) depends on this value.
    cfg_batch = min(args.batch, DIGITS_TRAIN_SIZE)
    opts = [
        "DATA.NAME",
        "digits",
        "DATA.IMAGE_SIZE",
        str(args.image_size),
        "DATA.NUM_WORKERS",
        "0",
        "MODEL.BACKBONE",
        args.backbone,
        "MODEL.WIDTH",
        str(args.width),
        "MODEL.STEM",
        args.stem,
        "MODEL.HIDDEN_DIM",
        str(hidden),
        "MODEL.OUT_DIM",
        str(out),
        "MODEL.CHANNELS_LAST",
        str(args.channels_last),
        "SOLVER.AMP",
        args.amp,
        "MODEL.COMPILE",
        str(args.compile),
        "SOLVER.OPTIMIZER_IMPL",
        args.optimizer_impl,
        "SOLVER.BATCH_SIZE",
        str(cfg_batch),
        "SOLVER.EPOCHS",
        "1",
        "SOLVER.MAX_STEPS",
        "1000000",
        "SOLVER.WARMUP_EPOCHS",
        "0",
        "KNN.PERIOD",
        "0",
        "PROGRESS_BAR",
        "False",
        "DEVICE",
        args.device,
        "SEED",
        "0",
        "OUTPUT_DIR",
        output_dir,
    ] + list(method_overrides)
    return Pretrainer(load_config(None, opts))


def supervised_step_fn(trainer: Pretrainer, batch: int, device: torch.device):
    """A plain supervised step (encoder + linear classifier, cross-entropy, SGD) on one view of the batch.

    One forward and backward per image, against MSR's two forward-backward passes plus two forward
    passes of the target: the throughput ceiling of the same encoder on the same device.
    """
    cfg, s = trainer.cfg, trainer.settings
    encoder = build_encoder(cfg).to(
        device, memory_format=torch.channels_last if s.channels_last else torch.contiguous_format
    )
    model = torch.nn.Sequential(encoder, torch.nn.Linear(encoder.out_dim, 1000)).to(device).train()
    if cfg.MODEL.COMPILE:
        model.compile()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=s.amp_dtype == torch.float16)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def step(view: torch.Tensor) -> None:
        with torch.autocast(
            device.type, dtype=s.amp_dtype or torch.float32, enabled=s.amp_dtype is not None
        ):
            logits = model(
                view.contiguous(memory_format=torch.channels_last) if s.channels_last else view
            )
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    info = machine_info(args.device)
    generator = torch.Generator().manual_seed(0)
    views = [
        torch.randn(args.batch, 3, args.image_size, args.image_size, generator=generator).to(device)
        for _ in range(4)
    ]

    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for label, (overrides, _) in METHODS.items():
            trainers[label] = build(overrides, args, os.path.join(tmp, label.replace(" ", "_")))
        logging.getLogger("pretrain").setLevel(logging.WARNING)
        for trainer in trainers.values():
            trainer.state.online.train()
            if trainer.state.target is not None:
                trainer.state.target.train()

        labels = list(METHODS) + ([SUPERVISED] if args.reference else [])
        supervised = (
            supervised_step_fn(trainers["MSR"], args.batch, device) if args.reference else None
        )

        def step(label):
            sync()
            tic = time.perf_counter()
            if label == SUPERVISED:
                supervised(views[0])
            else:
                trainer = trainers[label]
                train_step(
                    trainer.state, views[:2] if METHODS[label][1] == 2 else views, trainer.settings
                )
            sync()
            return time.perf_counter() - tic

        for label in labels:
            for _ in range(args.warmup):
                step(label)
        times = {label: [] for label in labels}
        for _ in range(args.steps):
            for label in labels:
                times[label].append(step(label))
        for trainer in trainers.values():
            trainer.metrics.close()
        params_m = sum(p.numel() for p in trainers["MSR"].state.online.parameters()) / 1e6

    med = {label: statistics.median(t) for label, t in times.items()}
    results = {
        label: {
            "median_ms": med[label] * 1e3,
            "images_per_s": args.batch / med[label],
            "spread": spread(times[label]),
        }
        for label in times
    }
    ratios = {
        "msr_over_byol_aw": med["MSR"] / med["BYOL AW"],
        "msr_over_byol_aa": med["MSR"] / med["BYOL AA"],
    }
    if SUPERVISED in med:
        ratios["msr_over_supervised"] = med["MSR"] / med[SUPERVISED]
    for label, res in results.items():
        print(
            f"{label:8s}: {res['median_ms']:.1f} ms/step, {res['images_per_s']:.0f} images/s "
            f"(spread {res['spread'] * 100:.0f} %)"
        )
    print(
        f"MSR / BYOL AW = {ratios['msr_over_byol_aw']:.3f}, MSR / BYOL AA = {ratios['msr_over_byol_aa']:.3f}"
    )
    params = {k: v for k, v in vars(args).items()}
    if not args.compile and args.optimizer_impl == "auto" and not args.reference:
        for key in (
            "compile",
            "optimizer_impl",
            "reference",
        ):  # keep the keys of runs made before these options
            params.pop(key)
    run = new_run(
        info,
        params,
        results,
        start,
        ignore=("steps", "warmup"),
        online_params_M=params_m,
        torch_threads=torch.get_num_threads(),
        ratios=ratios,
    )
    print(publish(NAME, run, render, TITLE))


def render(run: dict) -> str:
    p, res, ratios = run["params"], run["results"], run["ratios"]
    setting = (
        f"{p['backbone']} width {p['width']}, {p['stem']} stem ({run['online_params_M']:.2f} M online "
        f"parameters), {p['image_size']} px, batch {p['batch']}, device {p['device']}, AMP {p['amp']}"
        f"{', channels-last' if p['channels_last'] else ''}{', torch.compile' if p.get('compile') else ''}"
        f"{', optimizer ' + p['optimizer_impl'] if p.get('optimizer_impl', 'auto') != 'auto' else ''}, "
        f"{run['torch_threads']} CPU thread(s); "
        f"median of {p['steps']} steps after {p['warmup']} warm-up steps."
    )
    headers = [
        "method",
        "views per image",
        "ms / step",
        "images / s",
        "spread of steps",
        "MSR / this",
    ]
    rows = []
    for label, (_, n_views) in METHODS.items():
        r = res[label]
        ratio = "-" if label == "MSR" else goal_mark(res["MSR"]["median_ms"] / r["median_ms"], GOAL)
        rows.append(
            [
                label,
                n_views,
                f"{r['median_ms']:.1f}",
                f"{r['images_per_s']:.0f}",
                f"{r['spread'] * 100:.0f} %",
                ratio,
            ]
        )
    ceiling = ""
    if SUPERVISED in res:
        r = res[SUPERVISED]
        rows.append(
            [
                SUPERVISED,
                1,
                f"{r['median_ms']:.1f}",
                f"{r['images_per_s']:.0f}",
                f"{r['spread'] * 100:.0f} %",
                f"{ratios['msr_over_supervised']:.2f}",
            ]
        )
        ceiling = (
            f" The supervised row is the ceiling: one forward-backward per image where MSR runs two "
            f"forward-backward passes and two target forward passes (about {MSR_COST_UNITS:.2f}x the work), "
            f"so MSR / supervised near {MSR_COST_UNITS:.2f} means MSR's step runs at the encoder's speed "
            f"(measured {ratios['msr_over_supervised']:.2f})."
        )
    return (
        setting
        + "\n\n"
        + markdown_table(headers, rows)
        + f"\n\nGoal: MSR / BYOL <= {GOAL} (the paper reports <= {PAPER}). "
        f"MSR / BYOL AW = {ratios['msr_over_byol_aw']:.3f}, MSR / BYOL AA = {ratios['msr_over_byol_aa']:.3f}."
        + ceiling
    )


if __name__ == "__main__":
    main()
