#!/usr/bin/env python
"""kNN top-1 (k=200, T=0.1, cosine) of a pretraining checkpoint's encoder on its data set's test split.

    python tools/knn.py CHECKPOINT [--cfg CONFIG] [--which online|target] [KEY VALUE ...]
    torchrun --nproc_per_node 8 tools/knn.py CHECKPOINT ...      # features extracted on 8 GPUs

Without --cfg the config saved in the checkpoint is used; overrides (e.g. DATA.ROOT) apply on top.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import add_common_arguments, parse_tool_args, run_main  # noqa: E402


def main(args: argparse.Namespace) -> int:
    from pretrain import distributed as comm
    from pretrain import knn_from_checkpoint

    with (
        comm.process_group() as info
    ):  # torchrun / SLURM environment; nothing to join for a single process
        top1 = knn_from_checkpoint(args.checkpoint, args.cfg, args.opts, args.which)
    if info.rank == 0:
        print(f"kNN top-1: {top1:.2f}")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a checkpoint_*.pth written by tools/pretrain.py")
    parser.add_argument(
        "--cfg", default=None, help="config name or path (default: the one saved in the checkpoint)"
    )
    parser.add_argument(
        "--which", choices=("online", "target"), default="online", help="encoder to evaluate"
    )
    add_common_arguments(parser)
    return parse_tool_args(parser, argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
