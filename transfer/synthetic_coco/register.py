"""Registering the synthetic data set with Detectron2 (instances and keypoints, train and val)."""

from __future__ import annotations

import os
from typing import List

from .categories import (
    COCO_KEYPOINT_CONNECTION_RULES,
    COCO_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    THING_CLASSES,
)
from .coco_json import SPLITS

# --------------------------------------------------------------------------------------------------
# Detectron2 registration
# --------------------------------------------------------------------------------------------------


def synthetic_coco_dataset_names(prefix: str = "synthetic_coco") -> List[str]:
    """The four names ``register_synthetic_coco`` registers, in its order."""
    return [
        f"{prefix}_{kind}_{short}"
        for kind in ("instances", "keypoints")
        for short in ("train", "val")
    ]


def register_synthetic_coco(root: str, prefix: str = "synthetic_coco") -> List[str]:
    """Register the data set written by ``write_synthetic_coco(root)`` with Detectron2.

    Registers ``{prefix}_instances_{train,val}`` (person + shapes; boxes and masks) and
    ``{prefix}_keypoints_{train,val}`` (person only, with keypoint_names, keypoint_flip_map and
    keypoint_connection_rules set) through ``register_coco_instances``, and returns the names.
    Calling it again with the same root is a no-op; with another root the names are re-registered
    to point at the new root.
    """
    from transfer import d2compat

    d2compat.apply()
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    root = os.path.abspath(root)
    missing = [
        p
        for split in SPLITS
        for p in (
            os.path.join(root, split),
            os.path.join(root, "annotations", f"instances_{split}.json"),
            os.path.join(root, "annotations", f"person_keypoints_{split}.json"),
        )
        if not os.path.exists(p)
    ]
    if missing:
        raise FileNotFoundError(
            f"register_synthetic_coco: {root} is not a synthetic COCO data set: missing {', '.join(missing)}. "
            f"Create it with: python tools/make_synthetic_coco.py {root}"
        )
    names = []
    for kind, stem in (("instances", "instances"), ("keypoints", "person_keypoints")):
        for split, short in zip(SPLITS, ("train", "val")):
            name = f"{prefix}_{kind}_{short}"
            json_file = os.path.join(root, "annotations", f"{stem}_{split}.json")
            image_root = os.path.join(root, split)
            if kind == "instances":
                metadata = {"thing_classes": list(THING_CLASSES)}
            else:
                metadata = {
                    "thing_classes": ["person"],
                    "keypoint_names": list(COCO_PERSON_KEYPOINT_NAMES),
                    "keypoint_flip_map": list(COCO_KEYPOINT_FLIP_MAP),
                    "keypoint_connection_rules": list(COCO_KEYPOINT_CONNECTION_RULES),
                }
            if name in DatasetCatalog.list():
                old = MetadataCatalog.get(name)
                if (
                    getattr(old, "json_file", None) == json_file
                    and getattr(old, "image_root", None) == image_root
                ):
                    names.append(name)
                    continue
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
            register_coco_instances(name, metadata, json_file, image_root)
            names.append(name)
    return names
