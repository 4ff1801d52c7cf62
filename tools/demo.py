#!/usr/bin/env python
"""Run the demo (what `make demo` runs): BYOL vs MSR on the embedded digits data, then print the table.

    python tools/demo.py [--output-dir output/demo] [KEY VALUE ...]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain.cli import add_common_arguments, run_main, strip_separator  # noqa: E402


def main(args: argparse.Namespace) -> int:
    from pretrain.demo import format_table, run_demo

    results = run_demo(args.output_dir, tuple(strip_separator(args.opts)))
    print("\n" + format_table(results))
    print(f"\nRuns, metrics.jsonl and TensorBoard logs: {args.output_dir}/")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="output/demo", help="where the demo runs are written (replaced)")
    add_common_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
