"""Export of a pretrained encoder as a plain backbone state dict for torchvision or timm.

The output is ``{name: tensor}`` with torchvision's ResNet key names and no classifier, which is also
timm's layout for its ``resnet*`` models, so it loads strictly in both:

    m = torchvision.models.resnet50(); m.fc = torch.nn.Identity(); m.load_state_dict(torch.load(OUT))
    timm.create_model("resnet50", pretrained=False, num_classes=0, checkpoint_path=OUT)

Inputs are those of the Detectron2 converter (transfer/convert.py): this project's pretraining
checkpoints, the public MSR code's and MoCo-style checkpoints, plain torchvision state dicts. Both
libraries only build the standard network (7x7 stem, 64 stem channels), so other ones are refused.
Verification loads the file the way a user would and compares the pooled features with ours.
"""

from __future__ import annotations

import os
from typing import Dict

import torch

from pretrain import ensure_output_dir, save_atomic

from .convert import Backbone, ConversionError, source_encoder

FORMATS = ("torchvision", "timm")
STANDARD_WIDTH = 64  # stem channels of torchvision's and timm's ResNets
EXPORTABLE = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def check_exportable(backbone: Backbone, fmt: str) -> None:
    """Refuse a network that ``fmt`` cannot build, saying why (the stem is checked on extraction)."""
    if fmt not in FORMATS:
        raise ConversionError(f"Unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    if backbone.depth not in EXPORTABLE:
        raise ConversionError(
            f"{backbone.source}: {backbone.depth} has no {fmt} model to load into."
        )
    if backbone.width != STANDARD_WIDTH:
        raise ConversionError(
            f"{backbone.source} is a {backbone.depth} of width {backbone.width} (stem channels; "
            f"MODEL.WIDTH): {fmt} builds its {backbone.depth} with width {STANDARD_WIDTH} only, so these "
            f"weights cannot be loaded into it. Pretrain with MODEL.WIDTH {STANDARD_WIDTH} to export, "
            f"or use the network with this project's ResNet (pretrain.ResNet) or tools/convert_to_d2.py, "
            f"which take any width."
        )


def backbone_state(backbone: Backbone) -> Dict[str, torch.Tensor]:
    """The state dict the target libraries expect: every key of the network without its classifier,
    BatchNorm's ``num_batches_tracked`` included (0 where the source has none)."""
    reference = source_encoder(backbone).state_dict()
    state = {}
    for key, value in reference.items():
        source = backbone.state.get(key)
        state[key] = (source if source is not None else value).detach().clone().contiguous()
    return state


def write_export(state: Dict[str, torch.Tensor], path: str) -> None:
    """Save ``state`` to ``path`` atomically (its folder is created if missing)."""
    ensure_output_dir(os.path.dirname(path) or ".", f"the folder of the output file '{path}'")
    save_atomic(state, path)


def load_exported(path: str, depth: str, fmt: str) -> torch.nn.Module:
    """The target library's model built from the exported file, exactly as the module docstring shows."""
    if fmt == "timm":
        import timm

        return timm.create_model(depth, pretrained=False, num_classes=0, checkpoint_path=path)
    import torchvision

    model = getattr(torchvision.models, depth)()
    model.fc = torch.nn.Identity()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


@torch.no_grad()
def verify_export(backbone: Backbone, path: str, fmt: str, image_size: int = 64) -> float:
    """Max |diff| between the pooled features of the loaded model and of our encoder (eval mode)."""
    model = load_exported(path, backbone.depth, fmt).eval()
    ours = source_encoder(backbone)
    images = torch.randn(4, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    theirs, mine = model(images), ours(images)
    if theirs.shape != mine.shape:
        raise ConversionError(
            f"The {fmt} model gives features of shape {tuple(theirs.shape)}, ours {tuple(mine.shape)}."
        )
    return float((theirs - mine).abs().max())
