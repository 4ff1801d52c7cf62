"""Output locations: create a folder and check that files can be written in it, or say clearly why not.

Without this check a bad output path fails deep inside a run with a bare ``NotADirectoryError`` or
``PermissionError`` traceback (for example when a parent of OUTPUT_DIR is a regular file, which
even root cannot write through).
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, Optional

from pretrain.utils import distributed as comm
from pretrain.utils.errors import UserError


class OutputDirError(UserError):
    """An output folder that cannot be created or written to; the message names it and the fix."""


def ensure_output_dir(path: str, what: str) -> None:
    """Create folder ``path`` (with its parents) and check that a file can be created and removed in it.

    ``what`` names the setting for the message, e.g. "OUTPUT_DIR of the linear evaluation".
    Raises :class:`OutputDirError` (a UserError) when the folder is unusable.
    """
    folder = os.path.abspath(path or ".")
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_test.", dir=folder)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        raise OutputDirError(
            f"Cannot use '{path}' as {what}: {_reason(folder, err)}. Choose a folder that can be "
            f"created and written to (every parent must be a folder, not a file)."
        ) from None


def _reason(folder: str, err: OSError) -> str:
    """Why ``folder`` is unusable: the regular file in the way, else the operating system's reason."""
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        return f"'{blocker}' is a file, not a folder"
    where = f" ({err.filename})" if err.filename else ""
    return f"{err.strerror or err.__class__.__name__}{where}"


def _file_in_the_way(folder: str) -> str | None:
    """The nearest existing path at or above ``folder`` when it is not a folder (e.g. a regular file)."""
    current = folder
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    return None if os.path.isdir(current) else current


def prepare_run_dir(
    output_dir: str,
    what: str,
    existing: Optional[str],
    resume: bool,
    files: Dict[str, str],
    is_main: bool,
) -> None:
    """The output folder of a run, the same for every trainer (pretraining, linear evaluation).

    ``what`` names the run ("pretraining run"). ``existing`` is the run's checkpoint already in the
    folder (None: none): without ``resume`` it is never overwritten. The main process creates the
    folder, checks that it can be written and writes ``files`` ({file name: text}, e.g. config.yaml);
    then every process waits for it.
    """
    if existing and not resume:
        raise FileExistsError(
            f"OUTPUT_DIR '{output_dir}' already holds a {what} ({os.path.basename(existing)}). Pass --resume "
            f"to continue it, or choose another OUTPUT_DIR; nothing was overwritten."
        )
    if is_main:
        ensure_output_dir(output_dir, f"OUTPUT_DIR of the {what}")
        for name, text in files.items():
            with open(os.path.join(output_dir, name), "w", encoding="utf-8") as handle:
                handle.write(text)
    comm.barrier()
