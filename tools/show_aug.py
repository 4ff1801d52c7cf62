#!/usr/bin/env python
"""A grid of MSR's multi-stage views of a few training images, drawn with the config's own transforms.

    python tools/show_aug.py [--cfg digits_demo.yaml] [--num-images 8] [--seed 0] [--out output/aug_grid.png]
                             [KEY VALUE ...]

Columns: original | weak view 1 | aggressive view 1 (t2 of weak view 1) | weak view 2 | aggressive view 2.
With AUG.AGGRESSIVE_ON device the aggressive views come from the batched device augmentation (run on
the CPU here). The same seed gives the same picture.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import add_common_arguments, load_config, parse_tool_args, run_main


def main(args: argparse.Namespace) -> int:
    from pretrain import augmentation_grid

    cfg = load_config(args.cfg, args.opts)
    print(augmentation_grid(cfg, args.num_images, args.out, args.seed))
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
    parser.add_argument("--num-images", type=int, default=8, help="rows of the grid (default: 8)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every random draw (default: 0)"
    )
    parser.add_argument(
        "--out",
        default=os.path.join("output", "aug_grid.png"),
        help="PNG to write (default: output/aug_grid.png); its folder is created",
    )
    add_common_arguments(parser)
    return parse_tool_args(parser, argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
