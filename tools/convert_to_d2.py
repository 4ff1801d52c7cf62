#!/usr/bin/env python
"""Convert a ResNet checkpoint to Detectron2's backbone format, and verify the result.

    python tools/convert_to_d2.py CHECKPOINT OUT.pkl [--which online|target] [--no-verify]

Reads this project's pretraining checkpoints, the public MSR code's and MoCo-style checkpoints
(module.encoder_q.*) and plain torchvision ResNet state dicts. Verification (on by default when
Detectron2 imports) loads OUT.pkl into Detectron2's ResNet and checks that res2..res5 equal the
source network's layer1..layer4 on random input (eval mode, max abs diff <= 1e-4).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import run_main  # noqa: E402
from transfer.convert import add_weights_arguments  # noqa: E402

TOLERANCE = 1e-4


def main(args: argparse.Namespace) -> int:
    from transfer.convert import (
        convert_backbone,
        extract_backbone,
        load_weights_file,
        write_d2_pickle,
    )

    obj = load_weights_file(args.checkpoint, args.allow_unsafe_pickle)
    backbone = extract_backbone(obj, args.which, source=f"'{args.checkpoint}'")
    converted = convert_backbone(backbone)
    write_d2_pickle(converted, args.output)
    print(
        f"Converted the {args.which} encoder ({backbone.depth}, width {backbone.width}) of {args.checkpoint}: "
        f"{len(converted)} tensors -> {args.output}"
    )
    if args.no_verify:
        return 0
    try:
        from transfer.detection import read_d2_pickle, verify_conversion
    except ImportError as err:
        print(
            f"Verification skipped: Detectron2 is not importable ({err}). Install it (see README) or pass "
            f"--no-verify to silence this."
        )
        return 0
    diffs = verify_conversion(backbone, read_d2_pickle(args.output), args.det_config)
    worst = max(diffs.values())
    print(
        "Verification (Detectron2 res2..res5 vs source layer1..layer4, eval mode, max |diff|): "
        + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
    )
    if worst > TOLERANCE:
        print(
            f"error: verification FAILED: max |diff| {worst:.3e} > {TOLERANCE:g}", file=sys.stderr
        )
        return 1
    print(f"Verification passed (max |diff| {worst:.2e} <= {TOLERANCE:g}).")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_weights_arguments(parser, "output .pkl for MODEL.WEIGHTS")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the Detectron2 equality check"
    )
    parser.add_argument(
        "--det-config", default="mask_rcnn_1x.yaml", help="detection config used for verification"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
