"""Export to torchvision and timm: strict loading the way users load, equal features, clear refusals."""

import subprocess
import sys

import pytest
import torch
from helpers import randomise_bn

from pretrain import CHECKPOINT_KIND, ResNet
from transfer.convert import ConversionError, extract_backbone
from transfer.export import (
    backbone_state,
    check_exportable,
    load_exported,
    verify_export,
    write_export,
)

ROOT = __file__.rsplit("/tests/", 1)[0]


def _checkpoint(depth="resnet18", width=64, stem="imagenet") -> dict:
    """A pretraining checkpoint (this project's layout) whose online and target encoders differ."""
    net = randomise_bn(ResNet(depth, width=width, stem=stem, zero_init_residual=False))
    online = {f"encoder.{k}": v for k, v in net.state_dict().items()}
    target = {k: v * 0.5 if v.is_floating_point() else v for k, v in online.items()}
    return {"kind": CHECKPOINT_KIND, "model": online, "target": target}


@pytest.mark.parametrize("depth", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("fmt", ["torchvision", "timm"])
def test_exported_backbones_load_strictly_and_give_our_features(depth, fmt, tmp_path):
    backbone = extract_backbone(_checkpoint(depth))
    check_exportable(backbone, fmt)
    path = str(tmp_path / "out.pth")
    write_export(backbone_state(backbone), path)
    assert verify_export(backbone, path, fmt) <= 1e-5  # load_exported loads with strict=True
    features = load_exported(path, depth, fmt).eval()(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 512 if depth != "resnet50" else 2048) and features.abs().sum() > 0


def test_the_target_encoder_is_exported_with_which_target(tmp_path):
    ckpt = _checkpoint()
    path = str(tmp_path / "target.pth")
    write_export(backbone_state(extract_backbone(ckpt, which="target")), path)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["conv1.weight"], ckpt["target"]["encoder.conv1.weight"])
    assert "fc.weight" not in saved and "layer1.0.bn1.num_batches_tracked" in saved


def test_verification_fails_on_wrong_weights(tmp_path):
    backbone = extract_backbone(_checkpoint())
    state = backbone_state(backbone)
    state["layer2.0.bn1.running_mean"] += 1.0
    path = str(tmp_path / "bad.pth")
    write_export(state, path)
    assert verify_export(backbone, path, "torchvision") > 1e-3


def test_moco_layout_is_accepted():
    net = ResNet("resnet18", width=64, stem="imagenet")
    moco = {"state_dict": {f"module.encoder_q.{k}": v for k, v in net.state_dict().items()}}
    check_exportable(extract_backbone(moco), "timm")


def test_a_narrow_network_is_refused_with_the_reason():
    backbone = extract_backbone(_checkpoint(width=16))
    with pytest.raises(ConversionError, match="width 16.*builds its resnet18 with width 64 only"):
        check_exportable(backbone, "timm")


def test_the_cifar_stem_is_refused_naming_the_library():
    with pytest.raises(ConversionError, match="CIFAR stem.*torchvision's ResNet stem is a 7x7"):
        extract_backbone(_checkpoint(width=64, stem="cifar"), target="torchvision")


def test_the_tool_exports_verifies_and_reports(tmp_path):
    ckpt_path = tmp_path / "checkpoint_0000001.pth"
    torch.save(_checkpoint(), ckpt_path)
    out = tmp_path / "exported" / "r18.pth"
    result = subprocess.run(
        [sys.executable, "tools/export.py", str(ckpt_path), str(out), "--format", "timm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Verification passed (max |diff|" in result.stdout and out.is_file()
    narrow = tmp_path / "narrow.pth"
    torch.save(_checkpoint(width=8), narrow)
    refused = subprocess.run(
        [sys.executable, "tools/export.py", str(narrow), str(out), "--format", "torchvision"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert (
        refused.returncode != 0
        and "width 8" in refused.stderr
        and "Traceback" not in refused.stderr
    )
