"""Atomic checkpoints that hold everything needed to resume a run exactly.

A checkpoint is a dict with ``kind`` = CHECKPOINT_KIND, the online and target state dicts,
optimizer and grad-scaler states, step/epoch counters, the config as YAML text, and the RNG
states of torch, numpy and python. Files load with ``torch.load(weights_only=True)``: numpy
RNG state is stored as tensors and plain tuples so no arbitrary unpickling is ever needed.

Each file written here gets a ``<file>.sha256`` companion holding the SHA-256 of its bytes: a
truncated file fails to load, but flipped bits inside tensor data load silently, so reading
checks the digest when the companion exists.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import warnings
import zipfile
from typing import Optional, Tuple

import numpy as np
import torch

from pretrain.utils.errors import UserError, first_line

CHECKPOINT_KIND = "msr_pretrain"
# A checkpoint made from a pretraining one by another tool (e.g. transfer/lincls.py) names its source under
# DERIVED_FROM_KEY and says what it is under DESCRIPTION_KEY, so the error for passing it where a pretraining
# checkpoint is expected can explain it without this module knowing the tool.
DERIVED_FROM_KEY = "pretrain_checkpoint"
DESCRIPTION_KEY = "description"  # e.g. "a linear-evaluation checkpoint written by tools/lincls.py"
FORMAT_VERSION = 1
UNSAFE = "needs unsafe unpickling"  # the phrase every refusal of a code-running file uses
# What to do instead, for tools that read pretraining checkpoints (knn, lincls, pretrain --resume): for a file
# refused because it needs unsafe unpickling, and for a corrupt file or one of another kind.
PRETRAIN_CHECKPOINT_FIX = (
    "Checkpoints written by tools/pretrain.py never need it: pass one of those "
    "(checkpoint_*.pth in the run's OUTPUT_DIR)."
)
CORRUPT_CHECKPOINT_FIX = (
    "Pass a checkpoint written by tools/pretrain.py (checkpoint_*.pth in the run's OUTPUT_DIR), "
    "or an earlier one of the same run."
)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


DIGEST_SUFFIX = ".sha256"
TMP_MARK = ".tmp."


class _HashingWriter:
    """A write-only file wrapper that feeds every byte written to a SHA-256 hash."""

    def __init__(self, handle):
        self.handle = handle
        self.hash = hashlib.sha256()

    def write(self, data) -> int:
        self.hash.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def _write_atomic(path: str, write) -> str:
    """Call ``write(handle)`` on a temporary file in the same folder, fsync it, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never a partial file. Returns
    the SHA-256 (hex) of the bytes written.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            writer = _HashingWriter(handle)
            write(writer)
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
    return writer.hash.hexdigest()


def save_atomic(obj: dict, path: str) -> None:
    """torch.save ``obj`` to ``path`` atomically, then its SHA-256 to ``path.sha256``."""
    digest = _write_atomic(path, lambda handle: torch.save(obj, handle))
    _write_atomic(
        path + DIGEST_SUFFIX,
        lambda handle: handle.write(f"{digest}  {os.path.basename(path)}\n".encode()),
    )


def save_atomic_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` atomically."""
    _write_atomic(path, lambda handle: handle.write(data))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_digest(path: str) -> None:
    """Raise CheckpointError when ``path.sha256`` exists and does not match the file's bytes."""
    companion = path + DIGEST_SUFFIX
    if not os.path.isfile(companion):
        return
    with open(companion, "r", encoding="utf-8") as handle:
        expected = handle.read().split()[:1]
    if expected != [file_sha256(path)]:
        raise CheckpointError(
            f"Checkpoint '{path}' is corrupt: its SHA-256 does not match the digest written with "
            f"it ({os.path.basename(companion)}); the file changed on disk after it was saved. "
            f"Use an earlier checkpoint."
        )


def rng_states() -> dict:
    """RNG states of python, numpy and torch (CPU and CUDA), in weights_only-loadable types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(_as_tuple(states["python"]))
    np_state = states["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(value):
    """Python's random state must be nested tuples; loaders may hand back lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def file_format(path: str) -> str:
    """The file's format: "zip" (torch.save), "pickle" (Detectron2 weights, legacy torch files) or "other"."""
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as handle:
        return "pickle" if handle.read(1) == b"\x80" else "other"


def torch_load_quietly(path: str, map_location="cpu", weights_only: bool = True):
    """torch.load without torch's warning about the pickle protocol of non-torch pickles."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location=map_location, weights_only=weights_only)


def _refused_global(err: Exception) -> str:
    """' (e.g. io.open)': the global that weights_only loading refused, when torch's message names it."""
    match = re.search(r"GLOBAL (\S+)", str(err))
    return f" (it refers to {match.group(1)})" if match else ""


def unreadable_message(
    path: str, err: Exception, fix: str, corrupt_fix: Optional[str] = None
) -> str:
    """One paragraph on why ``torch.load(path, weights_only=True)`` failed with ``err``.

    It ends with ``fix`` for files refused because they need unsafe unpickling, and with
    ``corrupt_fix`` (default: ``fix``) for files that are corrupt or of another kind.
    """
    corrupt_fix = fix if corrupt_fix is None else corrupt_fix
    kind = file_format(path)
    if kind == "pickle":
        return (
            f"'{path}' is a plain pickle file, not a PyTorch checkpoint (Detectron2 weights written by "
            f"tools/convert_to_d2.py are such files; only tools/train_det.py reads them, as MODEL.WEIGHTS). "
            f"It was not loaded: it {UNSAFE}, which can run arbitrary code. {fix}"
        )
    if (
        kind == "zip"
        and isinstance(err, pickle.UnpicklingError)
        and "weights only" in str(err).lower()
    ):
        return (
            f"'{path}' {UNSAFE}: besides tensors it stores Python objects{_refused_global(err)}, and "
            f"unpickling those can run arbitrary code, so it was not loaded. {fix}"
        )
    if kind == "zip":
        return (
            f"Could not read checkpoint '{path}': {err.__class__.__name__}: {first_line(err)}. The file is "
            f"corrupt or truncated. {corrupt_fix}"
        )
    return (
        f"'{path}' is not a PyTorch checkpoint: it is neither a zip archive (what torch.save writes) nor a "
        f"pickle, so it is corrupt, truncated or another kind of file. {corrupt_fix}"
    )


def read_checkpoint_file(
    path: str,
    map_location="cpu",
    fix: str = PRETRAIN_CHECKPOINT_FIX,
    corrupt_fix: str = CORRUPT_CHECKPOINT_FIX,
):
    """``torch.load(weights_only=True)`` of ``path``, or a CheckpointError for a missing or unreadable file.

    Nothing that needs unsafe unpickling is ever loaded; the error then says so, and ``fix`` what to do
    (``corrupt_fix`` for a corrupt file or one of another kind).
    """
    if not os.path.isfile(path):
        raise CheckpointError(
            f"Checkpoint '{path}' does not exist. Pass the path of a checkpoint file written by "
            f"this project's tools (they live in the run's OUTPUT_DIR)."
        )
    verify_digest(path)
    try:
        return torch_load_quietly(path, map_location)
    except Exception as err:  # noqa: BLE001 (truncated, not a torch file, or it needs unsafe unpickling)
        raise CheckpointError(unreadable_message(path, err, fix, corrupt_fix)) from None


def describe_derived(state) -> Optional[Tuple[str, str]]:
    """(what it is, the pretraining checkpoint it was made from) for a derived checkpoint, else None."""
    if not isinstance(state, dict) or not state.get(DERIVED_FROM_KEY):
        return None
    what = state.get(DESCRIPTION_KEY) or f"a checkpoint of kind '{state.get('kind')}'"
    return f"{what} (kind '{state.get('kind')}')", str(state[DERIVED_FROM_KEY])


def _not_pretraining_message(path: str, state) -> str:
    derived = describe_derived(state)
    if derived is not None:
        return (
            f"'{path}' is {derived[0]}, not an MSR pretraining checkpoint. Pass the pretraining checkpoint "
            f"it was made from: {derived[1]}."
        )
    found = (
        state.get("kind", "no 'kind' entry") if isinstance(state, dict) else type(state).__name__
    )
    return (
        f"'{path}' is not an MSR pretraining checkpoint of this project (found {found}). tools/pretrain.py "
        f"writes checkpoints with kind '{CHECKPOINT_KIND}'; to use other weights for detection, convert them "
        f"with tools/convert_to_d2.py."
    )


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load one of this project's pretraining checkpoints safely, or explain what is wrong."""
    state = read_checkpoint_file(path, map_location)
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(_not_pretraining_message(path, state))
    return state
