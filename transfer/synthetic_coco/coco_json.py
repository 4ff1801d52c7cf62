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
    for name, value, low in (
        ("num_train", num_train, 1),
        ("num_val", num_val, 1),
        ("image_size", image_size, MIN_IMAGE_SIZE),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(
                f"write_synthetic_coco: {name} must be an integer >= {low}, got {value!r}"
            )
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
    info = {
        "description": "Synthetic shapes and stick figures in COCO format (transfer/synthetic_coco/)",
        "version": "1.0",
        "year": 2017,
        "contributor": "msr",
        "seed": int(seed),
        "image_size": int(image_size),
    }
    licenses = [{"id": 1, "name": "generated", "url": ""}]
    keypoint_category = dict(
        CATEGORIES[0], keypoints=list(COCO_PERSON_KEYPOINT_NAMES), skeleton=COCO_PERSON_SKELETON
    )
    next_image_id, next_ann_id = 1, 1
    for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_val))):
        image_dir = os.path.join(root, split)
        os.makedirs(image_dir, exist_ok=True)
        images, instances, persons = [], [], []
        written = set()
        per_category = {name: 0 for name in THING_CLASSES}
        for index in range(count):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), split_index, index]))
            pixels, objects = render_image(rng, image_size, with_person=index % 4 != 3)
            image_id = next_image_id
            next_image_id += 1
            file_name = f"{image_id:012d}.png"
            Image.fromarray(pixels, mode="RGB").save(
                os.path.join(image_dir, file_name), format="PNG"
            )
            written.add(file_name)
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "height": image_size,
                    "width": image_size,
                    "license": 1,
                }
            )
            for obj in objects:
                instances.append(_annotation(obj, next_ann_id, image_id, keypoints=False))
                if obj["category"] == "person":
                    persons.append(_annotation(obj, next_ann_id, image_id, keypoints=True))
                per_category[obj["category"]] += 1
                next_ann_id += 1
        for stale in os.listdir(image_dir):
            if _FILE_RE.match(stale) and stale not in written:
                os.remove(os.path.join(image_dir, stale))
        instances_json = os.path.join(root, "annotations", f"instances_{split}.json")
        keypoints_json = os.path.join(root, "annotations", f"person_keypoints_{split}.json")
        _write_json(
            instances_json,
            {
                "info": info,
                "licenses": licenses,
                "images": images,
                "annotations": instances,
                "categories": CATEGORIES,
            },
        )
        _write_json(
            keypoints_json,
            {
                "info": info,
                "licenses": licenses,
                "images": images,
                "annotations": persons,
                "categories": [keypoint_category],
            },
        )
        summary["splits"][split] = {
            "images": len(images),
            "annotations": len(instances),
            "persons": len(persons),
            "per_category": per_category,
            "image_dir": image_dir,
            "instances_json": instances_json,
            "keypoints_json": keypoints_json,
        }
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary
