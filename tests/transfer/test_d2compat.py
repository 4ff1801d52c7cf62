"""transfer.d2compat: patches only what is missing, is idempotent, and makes Detectron2 usable on CPU."""

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from transfer import d2compat

EXPECTED_NAMES = {f"numpy.{n}" for n in d2compat.NUMPY_ALIASES} | {
    "PIL.Image.LINEAR",
    "detectron2._C",
}


def _state():
    """The objects apply() may set, to compare before/after."""
    numpy_attrs = {n: getattr(np, n, None) for n in d2compat.NUMPY_ALIASES}
    return numpy_attrs, getattr(Image, "LINEAR", None), sys.modules.get(d2compat.EXTENSION)


def test_apply_is_idempotent():
    first = d2compat.apply()
    before = _state()
    second = d2compat.apply()
    assert second == first == d2compat.applied_patches()
    assert len(set(first)) == len(first) and set(first) <= EXPECTED_NAMES
    after = _state()
    assert after[0] == before[0] and after[1] is before[1] and after[2] is before[2]


def test_apply_changes_nothing_when_nothing_is_missing(monkeypatch):
    """A complete environment (old numpy/Pillow names present, compiled detectron2._C loaded)."""
    aliases = {n: object() for n in d2compat.NUMPY_ALIASES}
    for name, value in aliases.items():
        monkeypatch.setattr(np, name, value, raising=False)
    linear = object()
    monkeypatch.setattr(Image, "LINEAR", linear, raising=False)
    compiled = types.ModuleType(d2compat.EXTENSION)
    compiled.__file__ = "/fake/site-packages/detectron2/_C.cpython-311-x86_64-linux-gnu.so"
    monkeypatch.setitem(sys.modules, d2compat.EXTENSION, compiled)
    if "detectron2" in sys.modules:
        monkeypatch.setattr(sys.modules["detectron2"], "_C", compiled, raising=False)
    monkeypatch.setattr(d2compat, "_APPLIED", [])

    assert d2compat.apply() == []
    assert d2compat.applied_patches() == []
    assert all(getattr(np, n) is v for n, v in aliases.items())
    assert Image.LINEAR is linear
    assert sys.modules[d2compat.EXTENSION] is compiled
    assert d2compat.has_compiled_ops()


def test_apply_supplies_each_missing_piece(monkeypatch):
    """A bare environment (new numpy/Pillow, no compiled extension) gets every patch, once."""
    d2compat.apply()
    import detectron2

    for name in d2compat.NUMPY_ALIASES:
        monkeypatch.setattr(np, name, None, raising=False)  # so that undo restores the real state
        monkeypatch.delattr(np, name)
    monkeypatch.setattr(Image, "LINEAR", None, raising=False)
    monkeypatch.delattr(Image, "LINEAR")
    monkeypatch.setitem(sys.modules, d2compat.EXTENSION, None)  # makes `import detectron2._C` fail
    monkeypatch.delattr(detectron2, "_C", raising=False)
    monkeypatch.setattr(d2compat, "_APPLIED", [])

    applied = d2compat.apply()
    assert set(applied) == EXPECTED_NAMES
    assert np.int is int and np.float is float and np.bool is bool and np.str is str
    assert Image.LINEAR == Image.BILINEAR
    from detectron2 import _C

    assert _C is sys.modules[d2compat.EXTENSION] and not d2compat.has_compiled_ops()
    with pytest.raises(AttributeError, match="not available"):
        _C.nms_rotated  # noqa: B018  (a compiled op)
    assert d2compat.apply() == applied  # nothing new the second time


def test_mask_rcnn_r50_fpn_builds_and_runs_on_cpu():
    d2compat.apply()
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(
        model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    )
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8).float()
    with torch.no_grad():
        outputs = model([{"image": image, "height": 96, "width": 128}])
    instances = outputs[0]["instances"]
    assert instances.image_size == (96, 128)
    assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(instances.get_fields())


def test_collect_env_info_works_with_or_without_compiled_ops():
    d2compat.apply()
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "detectron2" in info
    if not d2compat.has_compiled_ops():
        assert "not compiled" in info
