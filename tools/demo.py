#!/usr/bin/env python
"""Run the demo (what `make demo` runs): the whole pipeline on embedded data, then print the results.

digits pretraining (BYOL, MSR) -> kNN and linear evaluation -> verified Detectron2 conversion ->
Mask R-CNN and Keypoint R-CNN on synthetic COCO (MSR weights vs random init) -> tables.

    python tools/demo.py [--output-dir output/demo] [--det-opts KEY VALUE ...] [KEY VALUE ...]

Trailing KEY VALUE pairs override the pretraining config (configs/pretrain/digits_demo.yaml);
--det-opts pairs override both detection configs (configs/det/synthetic_*.yaml).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import add_common_arguments, parse_tool_args, run_main  # noqa: E402


def main(args: argparse.Namespace) -> int:
    from transfer.demo import format_report, run_full_demo

    results = run_full_demo(args.output_dir, tuple(args.opts), tuple(args.det_opts))
    print("\n" + format_report(results))
    print(f"\nRuns, logs and metrics: {args.output_dir}/")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", default="output/demo", help="where the demo runs are written (replaced)"
    )
    parser.add_argument(
        "--det-opts",
        nargs="+",
        default=[],
        metavar="KEY VALUE",
        help="overrides for the detection configs, e.g. SOLVER.MAX_ITER 20",
    )
    add_common_arguments(parser)
    return parse_tool_args(parser, argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
