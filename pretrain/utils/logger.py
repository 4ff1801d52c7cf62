"""Output of a run: the "pretrain" logger (stdout + log.txt), metrics.jsonl + TensorBoard, progress bars.

Pretraining and linear evaluation write their records the same way: one JSON line per record in
OUTPUT_DIR/metrics.jsonl, mirrored as TensorBoard scalars, on the main process only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys

logger = logging.getLogger("pretrain")


class MetricsWriter:
    """Appends JSON lines to metrics.jsonl and mirrors scalars to TensorBoard (main process only)."""

    def __init__(self, output_dir: str, enabled: bool, tag_prefix: str = "pretrain"):
        self.enabled = enabled
        self.tag_prefix = tag_prefix
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.tensorboard = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=os.path.join(output_dir, "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if (
                key not in ("step", "epoch")
                and isinstance(value, (int, float))
                and math.isfinite(value)
            ):
                self.tensorboard.add_scalar(f"{self.tag_prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def setup_logging(output_dir: str, enabled: bool) -> None:
    """Log to stdout and OUTPUT_DIR/log.txt on the main process; stay quiet elsewhere."""
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if not enabled:
        return
    fmt = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    for handler in (
        logging.StreamHandler(),
        logging.FileHandler(os.path.join(output_dir, "log.txt")),
    ):
        handler.setFormatter(fmt)
        logger.addHandler(handler)


def on_terminal() -> bool:
    """Whether stderr (where bars and log lines go) is a terminal: a file, a pipe, SLURM or CI is not.

    A bar redraws itself in place on a terminal; in a file every redraw stays, so tools show bars
    only here and write plain log lines elsewhere.
    """
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar that disappears when done; it does nothing when disabled or off a terminal."""
    from tqdm import tqdm

    live = enabled and on_terminal()
    return tqdm(total=total, desc=desc, disable=not live, dynamic_ncols=True, leave=False)
