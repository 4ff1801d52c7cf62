#!/usr/bin/env python
"""Pretrain a ResNet with MSR (or a baseline) from a config.

    python tools/pretrain.py --cfg in1k_200ep.yaml [--resume] [--dry-run] [KEY VALUE ...]

Exit status: 0 done; 2 a problem with the inputs (message printed); 75 stopped by SIGTERM or SIGUSR1
after saving a checkpoint (continue with --resume, e.g. after requeueing the job).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import (  # noqa: E402
    add_common_arguments,
    dry_run_text,
    load_config,
    parse_tool_args,
    run_main,
)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.cfg, args.opts)
    if args.dry_run:
        print(dry_run_text(cfg))
        return 0
    from pretrain import EXIT_PREEMPTED, Pretrainer
    from pretrain import distributed as comm

    with (
        comm.process_group() as info
    ):  # torchrun / SLURM environment; nothing to join for a single process
        result = Pretrainer(cfg, resume=args.resume).train()
    if result["preempted"]:
        if info.rank == 0:
            print(
                f"stopped on request at step {result['step']} after saving; continue with --resume"
            )
        return EXIT_PREEMPTED
    if info.rank == 0:
        print(f"done: step {result['step']}, kNN top-1 {result['knn_top1']}")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cfg",
        default="digits_demo.yaml",
        help="config name in configs/pretrain/ or a path (default: digits_demo.yaml)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in OUTPUT_DIR"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config and derived values, then exit",
    )
    add_common_arguments(parser)
    return parse_tool_args(parser, argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
