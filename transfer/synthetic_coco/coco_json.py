"""Writing the synthetic data set in COCO 2017's layout: PNG images and the two annotation files."""

from __future__ import annotations

import json
import math
import os
import re
import time
from typing import List, Tuple

import numpy as np
from PIL import Image

from .categories import CATEGORIES, COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_SKELETON, THING_CLASSES
from .draw import render_image

SPLITS: Tuple[str, str] = ("train2017", "val2017")
MIN_IMAGE_SIZE = 32  # smallest image side the shapes fit in
_FILE_RE = re.compile(
    r"^\d{12}\.png$"
)  # the image files this module writes (stale ones are removed)


def _annotation(obj: dict, ann_id: int, image_id: int, keypoints: bool) -> dict:
    pts = np.concatenate(obj["polygons"])
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": THING_CLASSES.index(obj["category"]) + 1,
        "segmentation": [[float(v) for v in p.reshape(-1)] for p in obj["polygons"]],
        "area": float(obj["mask"].sum()),
        "bbox": [float(x0), float(y0), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
        "iscrowd": 0,
    }
    if keypoints:
        flat: List[int] = []
        for x, y in obj["keypoints"]:
            # COCO keypoints are integer pixel indices (Detectron2 adds 0.5 when it loads them).
            flat += [int(math.floor(x)), int(math.floor(y)), 2]
        ann["keypoints"] = flat
        ann["num_keypoints"] = len(COCO_PERSON_KEYPOINT_NAMES)
    return ann


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


def write_synthetic_coco(
    root: str, num_train: int = 48, num_val: int = 16, image_size: int = 128, seed: int = 0
) -> dict:
    """Write the synthetic COCO data set under ``root`` (see the module docstring) and return a summary.

    Deterministic: the same arguments give byte-identical images and JSON files. Image ids run
    1..num_train (train2017) then num_train+1.. (val2017); annotation ids are unique across both
    splits and a person has the same id in the instances and keypoints files. Three images in four
    (the first of every split included) contain one person. PNG files of a previous run in the split
    folders that this run does not write (12-digit names only) are removed.
    """
    _check_sizes(num_train=num_train, num_val=num_val, image_size=image_size)
    start = time.perf_counter()
    root = os.path.abspath(root)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    summary = {
        "root": root,
        "image_size": int(image_size),
        "seed": int(seed),
        "thing_classes": list(THING_CLASSES),
        "splits": {},
    }
    ids = {"image": 1, "annotation": 1}  # the next free ids, running on across the splits
    for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_val))):
        image_dir = os.path.join(root, split)
        rendered = _render_split(image_dir, (int(seed), split_index), count, image_size, ids)
        summary["splits"][split] = _write_split_json(root, split, rendered, int(seed), image_size)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def _check_sizes(**sizes) -> None:
    """Each size an integer at least 1 (image_size at least MIN_IMAGE_SIZE), else a ValueError."""
    for name, value in sizes.items():
        low = MIN_IMAGE_SIZE if name == "image_size" else 1
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(
                f"write_synthetic_coco: {name} must be an integer >= {low}, got {value!r}"
            )


def _render_split(image_dir: str, seed_key: tuple, count: int, image_size: int, ids: dict) -> dict:
    """Draw and save one split's ``count`` images (image ``i`` seeded from ``seed_key + (i,)``).

    Returns the COCO image records, the instance and person-keypoint annotations and the number of
    objects per category; ``ids`` (next image / annotation id) is advanced. Stale PNGs are removed.
    """
    os.makedirs(image_dir, exist_ok=True)
    out = {"images": [], "instances": [], "persons": [], "image_dir": image_dir}
    out["per_category"] = {name: 0 for name in THING_CLASSES}
    for index in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([*seed_key, index]))
        pixels, objects = render_image(rng, image_size, with_person=index % 4 != 3)
        image_id, ids["image"] = ids["image"], ids["image"] + 1
        file_name = f"{image_id:012d}.png"
        Image.fromarray(pixels, mode="RGB").save(os.path.join(image_dir, file_name), format="PNG")
        out["images"].append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": image_size,
                "width": image_size,
                "license": 1,
            }
        )
        for obj in objects:
            ann_id, ids["annotation"] = ids["annotation"], ids["annotation"] + 1
            out["instances"].append(_annotation(obj, ann_id, image_id, keypoints=False))
            if obj["category"] == "person":
                out["persons"].append(_annotation(obj, ann_id, image_id, keypoints=True))
            out["per_category"][obj["category"]] += 1
    written = {image["file_name"] for image in out["images"]}
    for stale in os.listdir(image_dir):
        if _FILE_RE.match(stale) and stale not in written:
            os.remove(os.path.join(image_dir, stale))
    return out


def _write_split_json(root: str, split: str, rendered: dict, seed: int, image_size: int) -> dict:
    """Write a split's instances and person-keypoints files; returns the split's summary."""
    info = {
        "description": "Synthetic shapes and stick figures in COCO format (transfer/synthetic_coco/)",
        "version": "1.0",
        "year": 2017,
        "contributor": "msr",
        "seed": seed,
        "image_size": int(image_size),
    }
    header = {
        "info": info,
        "licenses": [{"id": 1, "name": "generated", "url": ""}],
        "images": rendered["images"],
    }
    keypoint_category = dict(
        CATEGORIES[0], keypoints=list(COCO_PERSON_KEYPOINT_NAMES), skeleton=COCO_PERSON_SKELETON
    )
    instances_json = os.path.join(root, "annotations", f"instances_{split}.json")
    keypoints_json = os.path.join(root, "annotations", f"person_keypoints_{split}.json")
    _write_json(
        instances_json,
        dict(header, annotations=rendered["instances"], categories=CATEGORIES),
    )
    _write_json(
        keypoints_json,
        dict(header, annotations=rendered["persons"], categories=[keypoint_category]),
    )
    return {
        "images": len(rendered["images"]),
        "annotations": len(rendered["instances"]),
        "persons": len(rendered["persons"]),
        "per_category": rendered["per_category"],
        "image_dir": rendered["image_dir"],
        "instances_json": instances_json,
        "keypoints_json": keypoints_json,
    }
