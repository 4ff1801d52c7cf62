"""Load Detectron2 weight pickles (.pkl) without running code: a restricted unpickler.

Detectron2 reads .pkl weights with ``pickle.load``, which runs whatever a file's pickle stream asks
for (``os.system``, ...). Weight pickles only need what rebuilds a dict of numpy arrays: numpy's
array and dtype reconstruction, ``_codecs.encode`` (how protocol-2 pickles store bytes) and
``collections.OrderedDict``. Every other global is refused before anything is called, and the error
says which one.
"""

from __future__ import annotations

import pickle

import numpy as np

from pretrain import UNSAFE, UserError, first_line

_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"  # numpy 2 renamed numpy.core
_NUMPY_HELPERS = (
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
)


def _allowed_globals() -> dict:
    """(module, name) as written in a file -> (module, name) to import.

    Files written with numpy 1 say numpy.core.*, files written with numpy 2 say numpy._core.*; both
    resolve to the installed numpy's module (numpy.core is a deprecated alias in numpy 2).
    """
    allowed = {
        (module, name): (module, name)
        for module, name in (
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
            ("collections", "OrderedDict"),
        )
    }
    for written in ("numpy.core", "numpy._core"):
        for module, name in _NUMPY_HELPERS:
            allowed[(f"{written}.{module}", name)] = (f"{_CORE}.{module}", name)
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A pickle that asks for something other than numpy arrays in plain containers; it was not loaded."""


class UnreadablePickleError(UserError, ValueError):
    """A file that is not a readable pickle (corrupt, truncated, or another kind of file)."""


class WeightsUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`; anything else raises UnsafePickleError."""

    def find_class(self, module: str, name: str):
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise UnsafePickleError(f"{module}.{name}")
        return super().find_class(*target)

    def persistent_load(self, pid):
        raise UnsafePickleError(f"persistent id {pid!r}")


def load_weights_pickle(path: str, fix: str):
    """Unpickle ``path`` allowing only dicts/lists of numpy arrays and plain values.

    A file that asks for anything else raises UnsafePickleError naming it and ending with ``fix``;
    nothing it refers to is imported or called. A file that is no pickle at all raises
    UnreadablePickleError. Python-2 pickles (Detectron2's model zoo) load too.
    """
    try:
        with open(path, "rb") as handle:
            return WeightsUnpickler(handle, encoding="latin1").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(
            f"'{path}' {UNSAFE}: it refers to {err}, which is not part of a dict of numpy arrays, and unpickling "
            f"it could run arbitrary code, so it was not loaded. {fix}"
        ) from None
    except Exception as err:  # noqa: BLE001 (not a pickle: truncated, corrupt, text, a zip archive, ...)
        raise UnreadablePickleError(
            f"'{path}' is not a readable weights pickle ({err.__class__.__name__}: {first_line(err)}): it is corrupt, "
            f"truncated or another kind of file. {fix}"
        ) from None
