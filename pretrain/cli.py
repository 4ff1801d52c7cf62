"""Helpers shared by the command-line tools: argument parsing and user-facing error reporting."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import yaml

from pretrain.config import derived_values
from pretrain.data.specs import KNOWN_TRAIN_SIZES
from pretrain.utils.errors import UserError

# Errors whose message already tells the user what is wrong and how to fix it.
USER_ERRORS = (UserError, FileExistsError, FileNotFoundError, PermissionError)
EXIT_USER_ERROR = 2


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument(
        "opts",
        nargs="*",
        metavar="KEY VALUE",
        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.05 OUTPUT_DIR runs/a",
    )


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse options and KEY VALUE overrides in any order.

    ``CHECKPOINT --cfg X KEY VALUE`` and ``KEY VALUE --cfg X`` are the same.
    """
    args = parser.parse_intermixed_args(argv)
    args.opts = strip_separator(args.opts)
    return args


def run_main(main: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``main``; a known user error prints one paragraph and exits 2 (full traceback with --debug)."""
    try:
        return main(args) or 0
    except USER_ERRORS as err:
        if getattr(args, "debug", False):
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def dry_run_text(cfg) -> str:
    """The fully resolved config as YAML followed by the derived values (no data is read)."""
    derived = derived_values(cfg, KNOWN_TRAIN_SIZES.get(cfg.DATA.NAME))
    return (
        cfg.dump() + "\n# derived values\n" + yaml.safe_dump({"derived": derived}, sort_keys=False)
    )


def strip_separator(opts: Sequence[str]) -> list:
    """argparse.REMAINDER keeps a leading '--'; drop it."""
    opts = list(opts)
    return opts[1:] if opts[:1] == ["--"] else opts
