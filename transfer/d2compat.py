"""Compatibility layer for running Detectron2 v0.6's Python code on current numpy/Pillow, with or
without its compiled extension.

Why: on machines that cannot install Detectron2 from its git repository (and so cannot compile it),
``dev/install_detectron2.py`` installs the Python sources of Detectron2 v0.6 only. Three things
then break, and this module supplies each of them, only when it is missing:

* numpy >= 1.24 removed the aliases ``np.int``, ``np.float``, ``np.bool`` (back since numpy 2.0)
  and ``np.str``, which Detectron2 v0.6 uses (masks, evaluation, data loading). They are set to
  the builtins they always aliased.
* Pillow >= 10 removed ``Image.LINEAR``, used as a default argument at import time of
  ``detectron2.data.transforms``. It is set to ``Image.BILINEAR`` (the same filter).
* ``detectron2._C`` (the C++/CUDA ops) is absent: ``detectron2.layers`` does
  ``from detectron2 import _C`` at import time. An empty stand-in module is registered, so that
  everything that does not call a custom op (Mask R-CNN / Keypoint R-CNN with FPN, box NMS and
  ROIAlign come from torchvision) works, and any use of a missing op fails with a clear message.
  Without the compiled ops, COCO evaluation must use ``COCOEvaluator(..., use_fast_impl=False)``:
  see :func:`has_compiled_ops`. ``detectron2.utils.collect_env.collect_env_info()`` works with the
  stand-in and reports it as not compiled.

On a proper Detectron2 install with a numpy/Pillow that still have these names, :func:`apply`
changes nothing. Call it before importing ``detectron2`` submodules; it is idempotent.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import sys
import threading
import types
import warnings
from typing import List

__all__ = ["apply", "applied_patches", "has_compiled_ops"]

logger = logging.getLogger(__name__)

EXTENSION = "detectron2._C"
# numpy aliases removed in numpy 1.24 (np.bool came back in 2.0) -> the builtin each one aliased.
NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "str": str}

_APPLIED: List[str] = []  # names of the patches this module applied in this process, in order
_LOCK = threading.Lock()
_STUB_MARK = "__d2compat_stub__"
_STUB_NOTE = (
    "detectron2._C is an empty stand-in registered by transfer.d2compat: Detectron2 was "
    "installed without its compiled C++/CUDA ops"
)


class _MissingExtension(types.ModuleType):
    """Stand-in for ``detectron2._C``: importable, with no ops; using an op raises AttributeError."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"detectron2._C.{name} is not available: {_STUB_NOTE}. Install Detectron2 from its git "
            "repository (pip install 'git+https://github.com/facebookresearch/detectron2.git') to "
            "use this op."
        )


def _make_stub() -> types.ModuleType:
    stub = _MissingExtension(EXTENSION, _STUB_NOTE + ".")
    stub.__spec__ = importlib.machinery.ModuleSpec(EXTENSION, loader=None)
    setattr(stub, _STUB_MARK, True)
    # Read by detectron2.utils.collect_env when detectron2._C imports: report "not compiled"
    # (instead of crashing on a missing attribute) and skip the CUDA arch check.
    stub.get_compiler_version = lambda: "not compiled (" + _STUB_NOTE + ")"
    stub.get_cuda_version = lambda: "not compiled"
    stub.has_cuda = lambda: False
    return stub


def _missing(module: types.ModuleType, name: str) -> bool:
    """True when MODULE has no attribute NAME (deprecation warnings of a present alias ignored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return not hasattr(module, name)


def _patch_numpy() -> List[str]:
    import numpy as np

    done = []
    for name, value in NUMPY_ALIASES.items():
        if _missing(np, name):
            setattr(np, name, value)
            done.append(f"numpy.{name}")
    return done


def _patch_pil() -> List[str]:
    from PIL import Image

    if _missing(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        return ["PIL.Image.LINEAR"]
    return []


def _patch_extension() -> List[str]:
    """Register the stand-in ``detectron2._C`` when detectron2 is installed but its extension
    cannot be imported; leave a loaded or importable extension (or an absent detectron2) alone."""
    if sys.modules.get(EXTENSION) is not None:
        return []
    try:
        import detectron2
    except ImportError:
        return []  # no detectron2 at all: nothing to complete
    try:
        importlib.import_module(EXTENSION)
        return []
    except ImportError:
        pass
    stub = _make_stub()
    sys.modules[EXTENSION] = stub
    detectron2._C = stub
    return [EXTENSION]


def apply() -> List[str]:
    """Supply what Detectron2 v0.6 needs and this environment lacks; idempotent.

    Returns the names of all patches this module has applied in this process (e.g.
    ``["numpy.int", "numpy.float", "numpy.str", "PIL.Image.LINEAR", "detectron2._C"]``), an empty
    list when nothing was missing, so callers can log it. A second call applies nothing new.
    """
    with _LOCK:
        new = _patch_numpy() + _patch_pil() + _patch_extension()
        _APPLIED.extend(new)
        if new:
            logger.info("Detectron2 compatibility patches applied: %s", ", ".join(new))
        return list(_APPLIED)


def applied_patches() -> List[str]:
    """Names of the patches :func:`apply` has applied so far in this process."""
    return list(_APPLIED)


def has_compiled_ops() -> bool:
    """True when Detectron2's compiled extension is available (not absent, not our stand-in).

    When False, use ``COCOEvaluator(..., use_fast_impl=False)`` (the fast COCO evaluation is a
    compiled op) and avoid layers built on custom ops (deformable conv, rotated boxes).
    """
    module = sys.modules.get(EXTENSION)
    if module is None:
        try:
            module = importlib.import_module(EXTENSION)
        except ImportError:
            return False
    return not getattr(module, _STUB_MARK, False)
