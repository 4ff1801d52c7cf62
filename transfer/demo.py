"""The whole pipeline on embedded data, as `make demo` runs it.

digits pretraining (BYOL and MSR, kNN monitor) -> linear evaluation -> verified conversion of the
MSR encoder to Detectron2 -> Mask R-CNN and Keypoint R-CNN fine-tuning on the synthetic COCO-format
data, from the MSR weights and from random initialisation with the same budget -> COCO AP table,
plus two pictures: the training curves of both runs and a grid of the demo's augmented views.
Everything runs on the CPU without downloads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from typing import Dict, List, Tuple

from pretrain import (
    DEMO_CONFIG,
    augmentation_grid,
    latest_checkpoint,
    load_config,
    plot_runs,
)
from pretrain import (
    format_demo_table as format_pretraining_table,
)
from pretrain import (
    run_demo as run_pretraining_demo,
)

from .convert import (
    Backbone,
    convert_backbone,
    extract_backbone,
    load_weights_file,
    write_d2_pickle,
)
from .lincls import run_linear_eval

LINCLS_CONFIG = "digits.yaml"
CURVES_FILE = "curves_byol_vs_msr.png"
AUG_GRID_FILE = "aug_grid.png"
DET_RUNS = (
    ("Mask R-CNN", "synthetic_mask_rcnn.yaml", ("bbox", "segm")),
    ("Keypoint R-CNN", "synthetic_keypoint_rcnn.yaml", ("bbox", "keypoints")),
)


def _log_detectron2_to_file(path: str) -> None:
    """Keep Detectron2's verbose training log in a file; the demo prints its own summary lines."""
    logger = logging.getLogger("detectron2")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s]: %(message)s"))
    logger.addHandler(handler)


def linear_evaluations(rows: List[dict], output_root: str) -> None:
    """Add the linear-evaluation top-1 of each pretraining run (cached digits features)."""
    for row in rows:
        ckpt = latest_checkpoint(row["output_dir"])
        out = os.path.join(output_root, "lincls_" + os.path.basename(row["output_dir"]))
        result = run_linear_eval(ckpt, LINCLS_CONFIG, ["OUTPUT_DIR", out, "PROGRESS_BAR", "False"])
        row["linear_top1"] = result["top1"]
        print(f"linear evaluation of {row['method'].split()[0]}: top-1 {result['top1']:.1f}")


def convert_and_verify(
    checkpoint: str, out_path: str, det_config: str
) -> Tuple[Backbone, Dict[str, float]]:
    """Convert the MSR encoder and check Detectron2 reproduces its stage outputs."""
    from .detection import read_d2_pickle, verify_conversion

    backbone = extract_backbone(load_weights_file(checkpoint), source=checkpoint)
    write_d2_pickle(convert_backbone(backbone), out_path)
    diffs = verify_conversion(backbone, read_d2_pickle(out_path), det_config)
    print(
        "conversion verified, max |Detectron2 - source| per stage: "
        + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
    )
    return backbone, diffs


def fine_tune_all(weights: str, output_root: str, det_opts: Tuple[str, ...]) -> List[dict]:
    """Each detection config from the MSR weights and from random initialisation, same budget."""
    from .detection import setup, train_or_evaluate

    rows = []
    synthetic_root = os.path.join(output_root, "synthetic_coco")
    for model_name, config, tasks in DET_RUNS:
        for init, path in (("MSR", weights), ("random init", "")):
            out = os.path.join(output_root, "det", f"{config[:-5]}_{'msr' if path else 'random'}")
            cfg = setup(
                config,
                [
                    "MODEL.WEIGHTS",
                    path,
                    "OUTPUT_DIR",
                    out,
                    "MSR.SYNTHETIC_ROOT",
                    synthetic_root,
                    *det_opts,
                ],
            )
            print(
                f"== {model_name} from {init}: {cfg.SOLVER.MAX_ITER} iterations on synthetic COCO "
                f"(batch {cfg.SOLVER.IMS_PER_BATCH})"
            )
            tic = time.perf_counter()
            with (
                open(os.path.join(output_root, "detectron2_log.txt"), "a", encoding="utf-8") as log,
                contextlib.redirect_stdout(log),
            ):  # pycocotools prints its summaries; keep them in the log
                results = train_or_evaluate(cfg)
            rows.append(
                {
                    "model": model_name,
                    "init": init,
                    "iterations": cfg.SOLVER.MAX_ITER,
                    "seconds": time.perf_counter() - tic,
                    **{task: results[task]["AP"] for task in tasks},
                }
            )
    return rows


def draw_pictures(
    rows: List[dict], output_root: str, pretrain_opts: Tuple[str, ...]
) -> Dict[str, str]:
    """The pretraining curves of the demo runs, overlaid, and the demo config's augmented views."""
    curves = plot_runs([row["output_dir"] for row in rows], os.path.join(output_root, CURVES_FILE))
    grid = augmentation_grid(
        load_config(DEMO_CONFIG, pretrain_opts), 8, os.path.join(output_root, AUG_GRID_FILE)
    )
    return {"curves": curves, "augmentation_grid": grid}


def clear_previous_demo(output_root: str) -> None:
    """Remove what an earlier demo wrote here (the pretraining runs are replaced by the pretraining demo)."""
    if not os.path.isdir(output_root):
        return
    for name in os.listdir(output_root):
        path = os.path.join(output_root, name)
        if name.startswith("lincls_") or name == "det":
            shutil.rmtree(path)
        elif name in (
            "msr_backbone_d2.pkl",
            "detectron2_log.txt",
            "results.json",
            CURVES_FILE,
            AUG_GRID_FILE,
        ):
            os.remove(path)


def run_full_demo(
    output_root: str = "output/demo",
    pretrain_opts: Tuple[str, ...] = (),
    det_opts: Tuple[str, ...] = (),
) -> dict:
    tic = time.perf_counter()
    clear_previous_demo(output_root)
    results = run_pretraining_demo(output_root, pretrain_opts)
    results["pictures"] = draw_pictures(results["rows"], output_root, pretrain_opts)
    linear_evaluations(results["rows"], output_root)
    msr_dir = next(row["output_dir"] for row in results["rows"] if row["method"].startswith("MSR"))
    weights = os.path.join(output_root, "msr_backbone_d2.pkl")
    backbone, results["verification"] = convert_and_verify(
        latest_checkpoint(msr_dir), weights, DET_RUNS[0][1]
    )
    _log_detectron2_to_file(os.path.join(output_root, "detectron2_log.txt"))
    from .detection import backbone_shape_opts

    shape = tuple(
        backbone_shape_opts(backbone.depth, backbone.width)
    )  # random init gets the same network
    results["detection"] = fine_tune_all(weights, output_root, shape + tuple(det_opts))
    results["total_seconds"] = time.perf_counter() - tic
    with open(os.path.join(output_root, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    return results


def format_detection_table(rows: List[dict]) -> str:
    lines = [
        "| model (synthetic COCO val) | backbone init | box AP | mask AP | keypoint AP | iterations | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [f"{row[t]:.1f}" if t in row else "-" for t in ("bbox", "segm", "keypoints")]
        lines.append(
            f"| {row['model']} | {row['init']} | {' | '.join(cells)} | {row['iterations']} | "
            f"{row['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def format_report(results: dict) -> str:
    worst = max(results["verification"].values())
    return "\n".join(
        [
            format_pretraining_table(results),
            "",
            f"Conversion to Detectron2 verified: max |diff| of res2..res5 = {worst:.1e}",
            "",
            format_detection_table(results["detection"]),
            "",
            f"Pictures: {results['pictures']['curves']} (training curves), "
            f"{results['pictures']['augmentation_grid']} (weak and aggressive views)",
            "",
            f"Total demo time: {results['total_seconds']:.0f} s",
        ]
    )
