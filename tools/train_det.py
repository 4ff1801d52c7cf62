#!/usr/bin/env python
"""Fine-tune Mask R-CNN / Keypoint R-CNN with Detectron2 from converted weights, and COCO-evaluate.

    python tools/train_det.py --config mask_rcnn_1x.yaml --num-gpus 8 MODEL.WEIGHTS out.pkl
    python tools/train_det.py --config keypoint_rcnn_1x.yaml --num-gpus 8 --num-machines 2 \\
        --machine-rank 0 --dist-url tcp://HOST:PORT MODEL.WEIGHTS out.pkl
    python tools/train_det.py --config mask_rcnn_1x.yaml --eval-only MODEL.WEIGHTS output/.../model_final.pth

A bare config name resolves to configs/det/ (short names: mask_rcnn_1x.yaml, mask_rcnn_2x.yaml,
keypoint_rcnn_1x.yaml); trailing KEY VALUE pairs override Detectron2 config keys.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import add_common_arguments, parse_tool_args, run_main  # noqa: E402


def worker(args: argparse.Namespace) -> dict:
    from transfer.detection import setup, train_or_evaluate

    cfg = setup(args.config, args.opts, args)
    return train_or_evaluate(cfg, resume=args.resume, eval_only=args.eval_only)


def main(args: argparse.Namespace) -> int:
    from transfer.detection import DetectionSetupError, resolve_det_config

    args.config_file = resolve_det_config(
        args.config
    )  # read by Detectron2's default_setup for its log
    if args.num_gpus > 1 or args.num_machines > 1:
        import torch

        if not torch.cuda.is_available():
            raise DetectionSetupError(
                "--num-gpus/--num-machines above 1 need CUDA GPUs (NCCL); on the CPU run "
                "one process (--num-gpus 1)."
            )
    from detectron2.engine import launch

    launch(
        worker,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", required=True, help="config in configs/det/ (or a short name, or a path)"
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="rank of this machine (0 .. num-machines-1)"
    )
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="rendezvous URL, e.g. tcp://HOST:PORT for several machines",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR"
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    add_common_arguments(parser)
    return parse_tool_args(parser, argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
