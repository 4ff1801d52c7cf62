"""Key mapping to Detectron2 names, refusal of unusable checkpoints, and verified equality of outputs."""

import pickle

import pytest
import torch
import torchvision
from helpers import randomise_bn

from pretrain.modeling.networks import ResNet
from transfer.convert import (
    ConversionError,
    convert_backbone,
    d2_pickle_dict,
    extract_backbone,
    load_weights_file,
    torchvision_to_d2_key,
    write_d2_pickle,
)


@pytest.mark.parametrize(
    "builder, depth",
    [(torchvision.models.resnet18, "resnet18"), (torchvision.models.resnet50, "resnet50")],
)
def test_torchvision_state_dict_maps_every_key(builder, depth):
    state = builder().state_dict()
    backbone = extract_backbone(state, source="torchvision")
    assert backbone.depth == depth and backbone.width == 64
    converted = convert_backbone(backbone)
    kept = [k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert len(converted) == len(kept)
    assert all(torch.equal(converted[torchvision_to_d2_key(k)], state[k]) for k in kept)
    assert all(k.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")) for k in converted)


@pytest.mark.parametrize(
    "key, expected",
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_var", "stem.conv1.norm.running_var"),
        ("layer1.0.conv2.weight", "res2.0.conv2.weight"),
        ("layer3.5.bn3.bias", "res4.5.conv3.norm.bias"),
        ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
        ("layer4.0.downsample.1.running_mean", "res5.0.shortcut.norm.running_mean"),
        ("fc.weight", None),
        ("bn1.num_batches_tracked", None),
    ],
)
def test_key_mapping_by_hand(key, expected):
    assert torchvision_to_d2_key(key) == expected


def test_checkpoint_styles_are_recognised():
    net = ResNet("resnet18", width=8, stem="imagenet")
    encoder = net.state_dict()
    moco = {
        "state_dict": {
            **{f"module.encoder_q.{k}": v for k, v in encoder.items()},
            **{f"module.encoder_k.{k}": v + 1 for k, v in encoder.items()},
            "module.encoder_q.fc.0.weight": torch.zeros(8, 64),
        }
    }
    online = extract_backbone(moco)
    momentum = extract_backbone(moco, which="target")
    assert torch.equal(online.state["conv1.weight"], encoder["conv1.weight"])
    assert torch.equal(momentum.state["conv1.weight"], encoder["conv1.weight"] + 1)
    ours = {
        "kind": "msr_pretrain",
        "model": {f"encoder.{k}": v for k, v in encoder.items()},
        "target": {f"encoder.{k}": v * 2 for k, v in encoder.items()},
    }
    assert torch.equal(
        extract_backbone(ours, which="target").state["conv1.weight"], encoder["conv1.weight"] * 2
    )
    assert extract_backbone(ours).width == 8 and extract_backbone(ours).depth == "resnet18"


def test_cifar_stem_is_refused_with_an_explanation():
    state = ResNet("resnet18", width=16, stem="cifar").state_dict()
    with pytest.raises(ConversionError, match="CIFAR stem.*7x7 stride-2.*MODEL.STEM imagenet"):
        extract_backbone(state)


def test_partial_and_broken_checkpoints_are_refused_listing_keys():
    state = torchvision.models.resnet18().state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.1.conv1.")}
    with pytest.raises(ConversionError, match=r"missing.*layer4\.1\.conv1\.weight"):
        convert_backbone(extract_backbone(partial))
    no_block = {k: v for k, v in state.items() if not k.startswith("layer4.1.")}
    with pytest.raises(ConversionError, match=r"blocks per stage \[2, 2, 2, 1\].*partial"):
        extract_backbone(no_block)
    broken = dict(state, **{"layer2.0.conv1.weight": torch.zeros(128, 64, 5, 5)})
    with pytest.raises(ConversionError, match=r"shape.*layer2\.0\.conv1\.weight"):
        convert_backbone(extract_backbone(broken))
    extra = dict(state, **{"layer1.0.se.fc.weight": torch.zeros(4, 4)})
    with pytest.raises(
        ConversionError, match=r"no Detectron2 equivalent: layer1\.0\.se\.fc\.weight"
    ):
        convert_backbone(extract_backbone(extra))
    with pytest.raises(ConversionError, match="No ResNet encoder found"):
        extract_backbone({"head.weight": torch.zeros(2, 2)})


def test_pickle_format(tmp_path):
    converted = convert_backbone(extract_backbone(torchvision.models.resnet18().state_dict()))
    path = tmp_path / "out.pkl"
    write_d2_pickle(converted, str(path))
    with open(path, "rb") as handle:
        data = pickle.load(handle)
    assert data["matching_heuristics"] is True and "__author__" in data
    assert set(data["model"]) == set(converted) and data["model"]["stem.conv1.weight"].shape == (
        64,
        3,
        7,
        7,
    )
    assert d2_pickle_dict(converted)["model"]["res2.0.conv1.weight"].dtype.name == "float32"


def test_unsafe_pickles_are_refused_without_the_flag(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this would run arbitrary code",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": torchvision.models.resnet18().state_dict(), "args": Payload()}, path)
    with pytest.raises(ConversionError, match="--allow-unsafe-pickle"):
        load_weights_file(str(path))
    assert "state_dict" in load_weights_file(str(path), allow_unsafe_pickle=True)


def test_checkpoint_changed_after_saving_is_refused_by_its_digest(tmp_path):
    from pretrain.engine.checkpoint import CheckpointError, save_atomic

    path = tmp_path / "checkpoint_0000001.pth"
    save_atomic({"state_dict": torchvision.models.resnet18().state_dict()}, str(path))
    assert "state_dict" in load_weights_file(str(path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside tensor data: torch.load alone would not notice
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is corrupt: its SHA-256 does not match"):
        load_weights_file(str(path))


@pytest.mark.parametrize("depth, width", [("resnet50", 16), ("resnet18", 16), ("resnet18", 64)])
def test_detectron2_outputs_equal_the_source(depth, width, tmp_path):
    from transfer.detection import read_d2_pickle, verify_conversion

    net = randomise_bn(ResNet(depth, width=width, stem="imagenet", zero_init_residual=False))
    backbone = extract_backbone(net.state_dict())
    path = tmp_path / "w.pkl"
    write_d2_pickle(convert_backbone(backbone), str(path))
    diffs = verify_conversion(backbone, read_d2_pickle(str(path)), image_size=64)
    assert set(diffs) == {"res2", "res3", "res4", "res5"} and max(diffs.values()) <= 1e-4


def test_verification_detects_a_wrong_mapping(tmp_path):
    from transfer.detection import read_d2_pickle, verify_conversion

    net = randomise_bn(ResNet("resnet18", width=16, stem="imagenet", zero_init_residual=False))
    backbone = extract_backbone(net.state_dict())
    path = tmp_path / "w.pkl"
    write_d2_pickle(convert_backbone(backbone), str(path))
    weights = read_d2_pickle(str(path))
    weights["res3.0.conv1.norm.running_mean"], weights["res3.0.conv2.norm.running_mean"] = (
        weights["res3.0.conv2.norm.running_mean"],
        weights["res3.0.conv1.norm.running_mean"],
    )
    diffs = verify_conversion(backbone, weights, image_size=64)
    assert diffs["res2"] <= 1e-4 and diffs["res3"] > 1e-3
