"""The checkpoint files of one run folder: where the next goes, which to resume from, how many to keep.

Both trainers (pretraining and transfer/lincls.py) keep their checkpoints through a
:class:`Checkpointer`, so writing, pruning and finding the file to resume from are written once.
A trainer gives it a file-name rule and a reader for its checkpoint kind; pretraining writes one
file per step (``checkpoint_<step>.pth``, the newest CHECKPOINT.KEEP_LAST kept), linear evaluation
rewrites one ``lincls_checkpoint.pth`` every epoch.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Callable, List, Optional, Tuple

from pretrain.engine.checkpoint import (
    DIGEST_SUFFIX,
    TMP_MARK,
    CheckpointError,
    load_checkpoint,
    save_atomic,
)

logger = logging.getLogger(__name__)

PRETRAIN_CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d{7})\.pth$")  # what checkpoint_name writes


class Checkpointer:
    """The checkpoints of ``folder`` whose names match ``pattern``, ordered by name (oldest first).

    ``name_of(iteration)`` names the file a save at that iteration writes; ``read(path, map_location)``
    returns a file's contents or raises CheckpointError (wrong kind, corrupt, unsafe). ``keep_last``
    files are kept after each save (0: all). Only the main process (``is_main``) writes or deletes.
    """

    def __init__(
        self,
        folder: str,
        name_of: Callable[[int], str],
        pattern: "re.Pattern[str]",
        read: Callable[..., dict],
        keep_last: int = 0,
        is_main: bool = True,
        log_saves: bool = True,
    ):
        self.folder = folder
        self.name_of = name_of
        self.pattern = pattern
        self.read = read
        self.keep_last = keep_last
        self.is_main = is_main
        self.log_saves = log_saves

    def paths(self) -> List[str]:
        """The checkpoint files in the folder, oldest first (names sort in save order)."""
        if not os.path.isdir(self.folder):
            return []
        names = sorted(n for n in os.listdir(self.folder) if self.pattern.match(n))
        return [os.path.join(self.folder, n) for n in names]

    def newest(self) -> Optional[str]:
        paths = self.paths()
        return paths[-1] if paths else None

    def save(self, state: dict, iteration: int) -> str:
        """Write ``state`` atomically as the checkpoint of ``iteration``, then prune; returns its path."""
        path = os.path.join(self.folder, self.name_of(iteration))
        if not self.is_main:
            return path
        save_atomic(state, path)
        self.prune()
        if self.log_saves:
            logger.info(f"Saved checkpoint {path}")
        return path

    def prune(self) -> None:
        """Delete all but the newest ``keep_last`` checkpoints (and their digests)."""
        if self.keep_last <= 0 or not self.is_main:
            return
        for path in self.paths()[: -self.keep_last]:
            os.remove(path)
            if os.path.exists(path + DIGEST_SUFFIX):
                os.remove(path + DIGEST_SUFFIX)

    def remove_temporaries(self) -> None:
        """Delete half-written temporary files that a process killed while saving left behind."""
        if not self.is_main or not os.path.isdir(self.folder):
            return
        for name in os.listdir(self.folder):
            if not (name.startswith(".") and TMP_MARK in name):
                continue
            written = name[1:].split(TMP_MARK)[0]  # the checkpoint or its digest companion
            if written.endswith(DIGEST_SUFFIX):
                written = written[: -len(DIGEST_SUFFIX)]
            if self.pattern.match(written):
                os.remove(os.path.join(self.folder, name))

    def load_newest(self, map_location="cpu") -> Tuple[Optional[str], Optional[dict]]:
        """(path, contents) of the newest readable checkpoint, falling back past unreadable ones.

        (None, None) when there is none yet, so a requeued job can always pass --resume; a
        CheckpointError naming the folder and the newest file's problem when none can be read.
        """
        candidates = self.paths()
        newest_error = None
        for index, path in enumerate(reversed(candidates)):
            try:
                return path, self.read(path, map_location=map_location)
            except CheckpointError as err:
                newest_error = newest_error or err
                if index + 1 < len(candidates):
                    logger.warning(f"{err} Trying the previous checkpoint.")
        if candidates:
            raise CheckpointError(
                f"None of the {len(candidates)} checkpoint(s) in '{self.folder}' can be read; "
                f"the newest: {newest_error} Start a new run in another OUTPUT_DIR."
            )
        logger.info(f"--resume: no checkpoint in {self.folder} yet, starting a new run")
        return None, None


def checkpoint_name(step: int) -> str:
    """The file name of a pretraining checkpoint at ``step`` (zero-padded, so names sort by step)."""
    return f"checkpoint_{step:07d}.pth"


def pretrain_checkpointer(
    output_dir: str, keep_last: int = 0, is_main: bool = True
) -> Checkpointer:
    """The checkpoints of a pretraining run folder (tools/pretrain.py's OUTPUT_DIR)."""
    return Checkpointer(
        output_dir, checkpoint_name, PRETRAIN_CHECKPOINT_NAME, load_checkpoint, keep_last, is_main
    )


def list_checkpoints(output_dir: str) -> List[str]:
    """Pretraining checkpoint paths in ``output_dir``, oldest first (ordered by step)."""
    return pretrain_checkpointer(output_dir).paths()


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The newest pretraining checkpoint in ``output_dir`` (None: there is none)."""
    return pretrain_checkpointer(output_dir).newest()
