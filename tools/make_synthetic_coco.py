#!/usr/bin/env python
"""Write a small COCO-format data set of drawn shapes and stick figures (boxes, masks, keypoints).

    python tools/make_synthetic_coco.py OUT_DIR [--num-train 48] [--num-val 16] [--image-size 128] [--seed 0]

OUT_DIR gets the layout of COCO 2017 (train2017/, val2017/, annotations/instances_*.json and
annotations/person_keypoints_*.json), so Detectron2's COCO loaders read it; see
transfer/synthetic_coco/.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transfer.synthetic_coco import write_synthetic_coco  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if missing)")
    parser.add_argument("--num-train", type=int, default=48, help="training images (default 48)")
    parser.add_argument("--num-val", type=int, default=16, help="validation images (default 16)")
    parser.add_argument(
        "--image-size", type=int, default=128, help="square image side in pixels (default 128)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed, same files (default 0)"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = write_synthetic_coco(
            args.out_dir,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            seed=args.seed,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote synthetic COCO to {summary['root']} in {summary['seconds']:.2f} s "
        f"(image size {summary['image_size']}, seed {summary['seed']}, classes {', '.join(summary['thing_classes'])})"
    )
    for split, s in summary["splits"].items():
        counts = ", ".join(f"{k} {v}" for k, v in s["per_category"].items())
        print(
            f"  {split}: {s['images']} images in {s['image_dir']}, {s['annotations']} annotations ({counts})"
        )
        print(f"    {s['instances_json']}")
        print(f"    {s['keypoints_json']} ({s['persons']} persons with 17 keypoints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
