#!/usr/bin/env python
"""Export a pretrained encoder as a plain backbone state dict for torchvision or timm, and verify it.

    python tools/export.py CHECKPOINT OUT.pth --format torchvision|timm [--which online|target] [--no-verify]

Reads the checkpoints tools/convert_to_d2.py reads (this project's, the public MSR code's, MoCo-style,
plain torchvision). OUT.pth holds torchvision's ResNet keys without the classifier; load it with

    m = torchvision.models.resnet50(); m.fc = torch.nn.Identity(); m.load_state_dict(torch.load("OUT.pth"))
    m = timm.create_model("resnet50", pretrained=False, num_classes=0, checkpoint_path="OUT.pth")

Verification (on by default) loads OUT.pth that way and checks that the model's pooled features
equal our encoder's on random input (eval mode, max |diff| <= 1e-5).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import run_main  # noqa: E402
from transfer.convert import add_weights_arguments  # noqa: E402

TOLERANCE = 1e-5


def main(args: argparse.Namespace) -> int:
    from transfer.convert import extract_backbone, load_weights_file
    from transfer.export import backbone_state, check_exportable, verify_export, write_export

    obj = load_weights_file(args.checkpoint, args.allow_unsafe_pickle)
    source = f"'{args.checkpoint}'"
    backbone = extract_backbone(obj, args.which, source=source, target=args.format)
    check_exportable(backbone, args.format)
    state = backbone_state(backbone)
    write_export(state, args.output)
    print(
        f"Exported the {args.which} encoder ({backbone.depth}) of {args.checkpoint} for {args.format}: "
        f"{len(state)} tensors -> {args.output}"
    )
    if args.no_verify:
        return 0
    diff = verify_export(backbone, args.output, args.format)
    print(
        f"Verification ({args.format} {backbone.depth} vs our encoder, eval mode): max |diff| {diff:.2e}"
    )
    if diff > TOLERANCE:
        print(f"error: verification FAILED: max |diff| {diff:.3e} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    print(f"Verification passed (max |diff| {diff:.2e} <= {TOLERANCE:g}).")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_weights_arguments(parser, "output .pth (a plain state dict)")
    parser.add_argument(
        "--format", choices=("torchvision", "timm"), required=True, help="library to load it in"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the feature equality check")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
