"""Conversion of torchvision-style ResNet weights to Detectron2's backbone format.

Accepted inputs: this project's pretraining checkpoints (online encoder by default, the EMA target
with which="target"), the public MSR code's and MoCo-style checkpoints (``state_dict`` with
``module.encoder_q.*`` keys; ``encoder_k`` is their momentum encoder) and plain torchvision
ResNet state dicts. The output is Detectron2's pickle format:
``{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}``.

The mapping is total: every backbone key must map, every expected key must be present with the
expected shape, or the conversion is refused with the offending keys listed.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from pretrain import (
    ARCHITECTURES,
    CHECKPOINT_KIND,
    ResNet,
    UserError,
    describe_derived,
    ensure_output_dir,
    first_line,
    save_atomic_bytes,
    torch_load_quietly,
    unreadable_message,
    verify_digest,
)

AUTHOR = "MSR"


class ConversionError(UserError, ValueError):
    """Weights that cannot become a Detectron2 backbone; the message says which keys and why."""


@dataclass
class Backbone:
    """A torchvision-style ResNet state dict plus what was inferred about it."""

    state: Dict[str, torch.Tensor]
    source: str  # where it came from, for messages
    depth: str  # e.g. "resnet50"
    width: int  # channels of the stem


# (prefix of the online/query encoder, prefix of the target/momentum encoder) by checkpoint style
_PREFIXES = [
    ("module.encoder_q.", "module.encoder_k."),
    ("encoder_q.", "encoder_k."),
    ("module.online_encoder.", "module.target_encoder."),
    ("online_encoder.", "target_encoder."),
    ("module.encoder.", None),
    ("encoder.", None),
    ("module.backbone.", None),
    ("backbone.", None),
    ("module.", None),
    ("", None),
]

_STAGE = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")
_DROPPED = ("num_batches_tracked",)


def _flat_state(obj) -> Tuple[Dict[str, torch.Tensor], str]:
    if isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND:
        return obj, "pretrain"
    for key in ("state_dict", "model", "network", "online"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key], key
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, "plain"
    raise ConversionError(
        "The file holds no state dict of tensors (looked for a plain dict and the keys "
        "'state_dict', 'model', 'network', 'online'). Pass a checkpoint of a ResNet."
    )


def extract_backbone(
    obj, which: str = "online", source: str = "checkpoint", target: str = "Detectron2"
) -> Backbone:
    """Find the ResNet encoder inside a loaded checkpoint and return it with torchvision key names.

    ``target`` names the library the weights are for in the refusal of a CIFAR stem.
    """
    derived = describe_derived(obj)
    if derived is not None:
        raise ConversionError(
            f"{source} is {derived[0]}: it holds no encoder to convert. Convert the "
            f"pretraining checkpoint it was made from instead: {derived[1]}."
        )
    flat, style = _flat_state(obj)
    if (
        style == "pretrain"
    ):  # this project's checkpoint: model = online network, target = EMA network
        state = obj["model"] if which == "online" else obj.get("target")
        if state is None:
            raise ConversionError(
                f"{source} has no EMA target network (SimSiam runs have none); use --which online."
            )
        return _finish(
            {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")},
            source,
            target,
        )
    for online_prefix, target_prefix in _PREFIXES:
        prefix = online_prefix if which == "online" else target_prefix
        if prefix is None or f"{online_prefix}conv1.weight" not in flat:
            continue
        return _finish(
            {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}, source, target
        )
    sample = ", ".join(list(flat)[:5])
    hint = (
        " (no target/momentum encoder is known for this checkpoint style; use --which online)"
        if which == "target"
        else ""
    )
    raise ConversionError(
        f"No ResNet encoder found in {source}{hint}: expected keys like "
        f"'conv1.weight', 'module.encoder_q.conv1.weight' or 'encoder.conv1.weight'; "
        f"the first keys are: {sample}."
    )


def _finish(state: Dict[str, torch.Tensor], source: str, target: str) -> Backbone:
    conv1 = state.get("conv1.weight")
    if conv1 is None:
        raise ConversionError(
            f"{source}: the encoder has no 'conv1.weight'; it is not a torchvision-style ResNet."
        )
    if tuple(conv1.shape[2:]) != (7, 7):
        size = "x".join(str(n) for n in conv1.shape[2:])
        consequence = (
            ", and the network's stages produce features at 4x the resolution the detection heads expect"
            if target == "Detectron2"
            else ""
        )
        raise ConversionError(
            f"{source} has a {size} stem convolution (the CIFAR stem: 3x3, stride 1, no max-pool). "
            f"{target}'s ResNet stem is a 7x7 stride-2 convolution followed by a stride-2 max-pool, so "
            f"these weights cannot be loaded into it{consequence}. Pretrain with MODEL.STEM imagenet "
            f"(the standard stem) to transfer to {target}."
        )
    depth = _infer_depth(state, source)
    return Backbone(state, source, depth, int(conv1.shape[0]))


def _infer_depth(state: Dict[str, torch.Tensor], source: str) -> str:
    blocks = []
    for stage in range(1, 5):
        indices = {
            int(m.group(2)) for k in state if (m := _STAGE.match(k)) and m.group(1) == str(stage)
        }
        blocks.append(max(indices) + 1 if indices else 0)
    bottleneck = "layer1.0.conv3.weight" in state
    for name, (block, layers) in ARCHITECTURES.items():
        if tuple(layers) == tuple(blocks) and (block.expansion == 4) == bottleneck:
            return name
    raise ConversionError(
        f"{source}: blocks per stage {blocks} ({'bottleneck' if bottleneck else 'basic'} "
        f"blocks) match no supported ResNet ({', '.join(ARCHITECTURES)}); the checkpoint is "
        f"partial or of another architecture."
    )


def torchvision_to_d2_key(key: str) -> Optional[str]:
    """Detectron2 name of a torchvision ResNet parameter; None for keys that are dropped (fc, counters)."""
    if key.startswith("fc.") or key.endswith(_DROPPED):
        return None
    if key == "conv1.weight":
        return "stem.conv1.weight"
    if key.startswith("bn1."):
        return "stem.conv1.norm." + key[len("bn1.") :]
    match = _STAGE.match(key)
    if not match:
        raise KeyError(key)
    stage, block, rest = int(match.group(1)) + 1, match.group(2), match.group(3)
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    if not re.match(
        r"^(conv\d(\.norm)?|shortcut(\.norm)?)\.(weight|bias|running_mean|running_var)$", rest
    ):
        raise KeyError(key)
    return f"res{stage}.{block}.{rest}"


def convert_backbone(backbone: Backbone) -> Dict[str, torch.Tensor]:
    """Map every key to Detectron2's names, checking completeness and shapes against the architecture."""
    reference = {
        k: v.shape
        for k, v in ResNet(backbone.depth, backbone.width, "imagenet").state_dict().items()
        if not k.endswith(_DROPPED)
    }
    converted, unmapped, wrong_shape = {}, [], []
    for key, value in backbone.state.items():
        try:
            new_key = torchvision_to_d2_key(key)
        except KeyError:
            unmapped.append(key)
            continue
        if new_key is None:
            continue
        if key not in reference or tuple(reference[key]) != tuple(value.shape):
            wrong_shape.append(
                f"{key} {tuple(value.shape)} (expected {tuple(reference.get(key, ()))})"
            )
        converted[new_key] = value
    missing = sorted(k for k in reference if torchvision_to_d2_key(k) not in converted)
    problems = []
    if unmapped:
        problems.append(
            f"{len(unmapped)} key(s) with no Detectron2 equivalent: {', '.join(unmapped[:20])}"
        )
    if wrong_shape:
        problems.append(
            f"{len(wrong_shape)} key(s) whose shape does not fit a {backbone.depth} of width "
            f"{backbone.width}: {'; '.join(wrong_shape[:10])}"
        )
    if missing:
        problems.append(
            f"{len(missing)} backbone key(s) missing (partial checkpoint?): {', '.join(missing[:20])}"
        )
    if problems:
        raise ConversionError(
            f"Refusing to convert {backbone.source}: " + ". ".join(problems) + "."
        )
    return converted


def d2_pickle_dict(converted: Dict[str, torch.Tensor]) -> dict:
    """Detectron2's checkpoint layout for converted weights (numpy arrays, matching heuristics on)."""
    return {
        "model": {
            k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
            for k, v in converted.items()
        },
        "__author__": AUTHOR,
        "matching_heuristics": True,
    }


def write_d2_pickle(converted: Dict[str, torch.Tensor], path: str) -> None:
    """Write Detectron2's pickle of ``converted`` to ``path`` atomically (its folder is created if missing)."""
    ensure_output_dir(os.path.dirname(path) or ".", f"the folder of the output file '{path}'")
    save_atomic_bytes(
        pickle.dumps(d2_pickle_dict(converted), protocol=pickle.HIGHEST_PROTOCOL), path
    )


def source_encoder(backbone: Backbone) -> ResNet:
    """The source network as a module (eval mode), for verifying the converted weights."""
    net = ResNet(backbone.depth, backbone.width, "imagenet")
    net.load_state_dict({k: v for k, v in backbone.state.items() if not k.startswith("fc.")})
    return net.eval()


def add_weights_arguments(parser, output_help: str) -> None:
    """The arguments of the tools that read a ResNet checkpoint and write weights from it
    (tools/convert_to_d2.py, tools/export.py): CHECKPOINT OUT, --which, --allow-unsafe-pickle, --debug."""
    parser.add_argument(
        "checkpoint",
        help="pretraining checkpoint, MoCo/MSR-style checkpoint or torchvision state dict",
    )
    parser.add_argument("output", help=output_help)
    parser.add_argument(
        "--which",
        choices=("online", "target"),
        default="online",
        help="online encoder (default) or the EMA target / momentum encoder",
    )
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="load files that need full unpickling (can run code: only for files you trust)",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def load_weights_file(path: str, allow_unsafe_pickle: bool = False):
    """Load a checkpoint with ``weights_only=True``; full unpickling only when the user explicitly allows it.

    Checkpoints downloaded from the internet can run arbitrary code when fully unpickled.
    """
    if not os.path.isfile(path):
        raise ConversionError(
            f"Checkpoint '{path}' does not exist. Pass the path of a pretraining checkpoint "
            f"(checkpoint_*.pth in the run's OUTPUT_DIR) or of another ResNet checkpoint."
        )
    verify_digest(
        path
    )  # our own checkpoints carry a SHA-256 companion: flipped bits would load silently
    try:
        return torch_load_quietly(path, weights_only=not allow_unsafe_pickle)
    except Exception as err:  # noqa: BLE001 (needs unsafe unpickling, corrupt, or not a torch file)
        raise ConversionError(_load_error_message(path, err, allow_unsafe_pickle)) from None


def _load_error_message(path: str, err: Exception, allow_unsafe_pickle: bool) -> str:
    """Why ``path`` did not load; the fix names --allow-unsafe-pickle where that flag would help."""
    if allow_unsafe_pickle:
        return (
            f"Could not read '{path}' even with --allow-unsafe-pickle: {err.__class__.__name__}: "
            f"{first_line(err)}. Is it a PyTorch checkpoint, complete and uncorrupted?"
        )
    fix = "If you trust where the file comes from, pass --allow-unsafe-pickle (only then is it fully unpickled)."
    if path.endswith(".pkl"):
        fix = (
            "A Detectron2 .pkl is already converted: pass it to tools/train_det.py as MODEL.WEIGHTS. Otherwise, "
            "if you trust where the file comes from, pass --allow-unsafe-pickle."
        )
    return unreadable_message(path, err, fix, corrupt_fix="Pass a PyTorch checkpoint of a ResNet.")
