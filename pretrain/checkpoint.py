"""Atomic checkpoints that hold everything needed to resume a run exactly.

A checkpoint is a dict with ``kind`` = CHECKPOINT_KIND, the online and target state dicts,
optimizer and grad-scaler states, step/epoch counters, the config as YAML text, and the RNG
states of torch, numpy and python. Files load with ``torch.load(weights_only=True)``: numpy
RNG state is stored as tensors and plain tuples so no arbitrary unpickling is ever needed.
"""

from __future__ import annotations

import os
import random
import re
from typing import List, Optional

import numpy as np
import torch

from .errors import UserError

CHECKPOINT_KIND = "msr_pretrain"
FORMAT_VERSION = 1
_NAME = re.compile(r"^checkpoint_(\d{7})\.pth$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:07d}.pth"


def _write_atomic(path: str, write) -> None:
    """Call ``write(handle)`` on a temporary file in the same folder, fsync it, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never a partial file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_atomic(obj: dict, path: str) -> None:
    """torch.save ``obj`` to ``path`` atomically."""
    _write_atomic(path, lambda handle: torch.save(obj, handle))


def save_atomic_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` atomically."""
    _write_atomic(path, lambda handle: handle.write(data))


def list_checkpoints(output_dir: str) -> List[str]:
    """Checkpoint paths in ``output_dir``, oldest first (ordered by step)."""
    if not os.path.isdir(output_dir):
        return []
    names = sorted(n for n in os.listdir(output_dir) if _NAME.match(n))
    return [os.path.join(output_dir, n) for n in names]


def latest_checkpoint(output_dir: str) -> Optional[str]:
    paths = list_checkpoints(output_dir)
    return paths[-1] if paths else None


def prune_checkpoints(output_dir: str, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (0 keeps everything)."""
    if keep_last <= 0:
        return
    for path in list_checkpoints(output_dir)[:-keep_last]:
        os.remove(path)


def rng_states() -> dict:
    """RNG states of python, numpy and torch (CPU and CUDA), in weights_only-loadable types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(_as_tuple(states["python"]))
    np_state = states["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(value):
    """Python's random state must be nested tuples; loaders may hand back lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def read_checkpoint_file(path: str, map_location="cpu"):
    """``torch.load(weights_only=True)`` of ``path``, or a CheckpointError for a missing or unreadable file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint '{path}' does not exist. Pass the path of a checkpoint file written by "
                              f"this project's tools (they live in the run's OUTPUT_DIR).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated file, not a torch file, or one that needs unsafe unpickling
        raise CheckpointError(f"Could not read checkpoint '{path}': {err.__class__.__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}. The file is corrupt, truncated "
                              f"or not a checkpoint of this project; use an earlier checkpoint.") from None


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load one of this project's pretraining checkpoints safely, or explain what is wrong."""
    state = read_checkpoint_file(path, map_location)
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        found = state.get("kind", "no 'kind' entry") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"'{path}' is not an MSR pretraining checkpoint of this project (found {found}). "
                              f"tools/pretrain.py writes checkpoints with kind '{CHECKPOINT_KIND}'; to use other "
                              f"weights for detection, convert them with tools/convert_to_d2.py.")
    return state
