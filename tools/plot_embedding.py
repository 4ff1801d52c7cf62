#!/usr/bin/env python
"""A 2-D picture of a checkpoint's test-split features, coloured by class.

    python tools/plot_embedding.py CHECKPOINT --out FILE.png [--method tsne|umap] [--max-points N]
        [--which online|target] [KEY VALUE ...]

CHECKPOINT is a checkpoint_*.pth of tools/pretrain.py; its data set and preprocessing come from its
config (KEY VALUE overrides it, e.g. DATA.ROOT). At most N test images (default 2000, a seeded
class-balanced sample) are embedded, by t-SNE (scikit-learn) or UMAP (the optional umap-learn).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import add_common_arguments, parse_tool_args, run_main  # noqa: E402


def main(args: argparse.Namespace) -> int:
    from pretrain import plot_embedding

    drawn = plot_embedding(
        args.checkpoint, args.out, args.method, args.max_points, args.which, args.seed, args.opts
    )
    print(f"{drawn['points']} test images of {drawn['classes']} classes -> {drawn['out']}")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a checkpoint_*.pth written by tools/pretrain.py")
    parser.add_argument("--out", required=True, help="PNG to write; its folder is created")
    parser.add_argument(
        "--method", choices=("tsne", "umap"), default="tsne", help="(default: tsne)"
    )
    parser.add_argument(
        "--max-points", type=int, default=2000, help="test images drawn at most (default: 2000)"
    )
    parser.add_argument(
        "--which", choices=("online", "target"), default="online", help="encoder to draw"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and the projection")
    add_common_arguments(parser)
    return parse_tool_args(parser, argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
