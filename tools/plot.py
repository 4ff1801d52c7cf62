#!/usr/bin/env python
"""Training curves of one or more runs as a PNG: one panel per metric in their metrics.jsonl.

    python tools/plot.py RUN_DIR [RUN_DIR ...] [--out FILE.png]

RUN_DIR is an OUTPUT_DIR of tools/pretrain.py (or of tools/lincls.py). Several run folders are
overlaid, with each folder's name as the legend (e.g. output/demo/byol output/demo/msr). Default
output: RUN_DIR/curves.png for one run, curves_<a>_vs_<b>.png next to the first run for several.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import parse_tool_args, run_main


def main(args: argparse.Namespace) -> int:
    from pretrain import plot_runs

    print(plot_runs(args.run_dirs, args.out))
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="OUTPUT_DIR of a run (holds metrics.jsonl)"
    )
    parser.add_argument(
        "--out", default=None, help="PNG to write (default: see above); its folder is created"
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.set_defaults(
        opts=[]
    )  # no config here, so no KEY VALUE overrides (parse_tool_args expects the field)
    return parse_tool_args(parser, argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
