"""A small COCO-format data set of drawn shapes, for CPU demos and tests of Detectron2 fine-tuning.

``write_synthetic_coco(root)`` writes the same layout as real COCO 2017::

    root/train2017/000000000001.png ...          RGB images (PNG: lossless, so masks match pixels)
    root/val2017/...
    root/annotations/instances_{train2017,val2017}.json        person + SHAPE_CLASSES, boxes, polygons
    root/annotations/person_keypoints_{train2017,val2017}.json person only, COCO's 17 keypoints

Every image has a plain or lightly textured background and 1-4 non-overlapping objects, each filled
with one random colour far from the background. Shapes are polygons (a circle is a 32-gon); the
person is a stick figure made of a head (a polygonal disc), a torso and eight limb segments drawn
thick, and its 17 keypoints sit on the drawn parts (eyes, nose and ears on the head, shoulders and
hips on the torso, elbows, wrists, knees and ankles at the joints and ends of the limbs), all with
visibility 2. Because objects never overlap and every drawn pixel is a pixel whose centre lies in an
annotation polygon, the polygons, the masks COCO tools rasterise from them, and the drawing agree;
``area`` is the pixel count of that mask. The output is a pure function of the arguments.

``register_synthetic_coco(root)`` registers the four splits with Detectron2 under
``{prefix}_{instances,keypoints}_{train,val}``, with the keypoint metadata Keypoint R-CNN needs.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

SHAPE_CLASSES: Tuple[str, ...] = ("square", "circle", "triangle")
PERSON_CATEGORY_ID = 1

# Category ids as in COCO for person (1); the shapes follow.
CATEGORIES: List[dict] = [
    {"id": PERSON_CATEGORY_ID, "name": "person", "supercategory": "person"}
] + [{"id": i + 2, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)]
THING_CLASSES: Tuple[str, ...] = tuple(c["name"] for c in CATEGORIES)

# COCO's 17 person keypoints, in COCO's order. "left" is the person's left: for a figure facing the
# camera, left parts appear on the image's right (larger x).
COCO_PERSON_KEYPOINT_NAMES: Tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
COCO_KEYPOINT_FLIP_MAP: Tuple[Tuple[str, str], ...] = tuple(
    (name, "right_" + name[len("left_") :])
    for name in COCO_PERSON_KEYPOINT_NAMES
    if name.startswith("left_")
)
# COCO's person skeleton (1-based keypoint indices), as in person_keypoints_*.json.
COCO_PERSON_SKELETON: List[List[int]] = [
    [16, 14],
    [14, 12],
    [17, 15],
    [15, 13],
    [12, 13],
    [6, 12],
    [7, 13],
    [6, 7],
    [6, 8],
    [7, 9],
    [8, 10],
    [9, 11],
    [2, 3],
    [1, 2],
    [1, 3],
    [2, 4],
    [3, 5],
    [4, 6],
    [5, 7],
]
# For Detectron2's Visualizer: (keypoint, keypoint, RGB colour) per skeleton edge; left side blue,
# right side orange, centre line green.
_LEFT, _RIGHT, _CENTRE = (70, 110, 255), (255, 150, 40), (60, 200, 90)


def _edge_colour(a: str, b: str) -> Tuple[int, int, int]:
    if a.startswith("left_") and b.startswith("left_"):
        return _LEFT
    if a.startswith("right_") and b.startswith("right_"):
        return _RIGHT
    return _CENTRE


COCO_KEYPOINT_CONNECTION_RULES: List[Tuple[str, str, Tuple[int, int, int]]] = [
    (
        COCO_PERSON_KEYPOINT_NAMES[i - 1],
        COCO_PERSON_KEYPOINT_NAMES[j - 1],
        _edge_colour(COCO_PERSON_KEYPOINT_NAMES[i - 1], COCO_PERSON_KEYPOINT_NAMES[j - 1]),
    )
    for i, j in COCO_PERSON_SKELETON
]

SPLITS: Tuple[str, str] = ("train2017", "val2017")
MIN_IMAGE_SIZE = 32
_CIRCLE_VERTICES = 32
_HEAD_VERTICES = 24
_FILE_RE = re.compile(r"^\d{12}\.png$")


# --------------------------------------------------------------------------------------------------
# Geometry and rasterisation
# --------------------------------------------------------------------------------------------------


def _polygon_mask(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centre lies inside ``poly`` (N x 2, even-odd rule).

    This is the rule COCO's own polygon rasteriser approximates, so ``annToMask`` reproduces it up
    to a few boundary pixels.
    """
    mask = np.zeros((height, width), dtype=bool)
    x0 = max(int(math.floor(poly[:, 0].min())) - 1, 0)
    x1 = min(int(math.ceil(poly[:, 0].max())) + 1, width)
    y0 = max(int(math.floor(poly[:, 1].min())) - 1, 0)
    y1 = min(int(math.ceil(poly[:, 1].max())) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return mask
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    inside = np.zeros(px.shape, dtype=bool)
    n = len(poly)
    for k in range(n):
        xa, ya = poly[k]
        xb, yb = poly[(k + 1) % n]
        if ya == yb:
            continue  # horizontal edges never cross a scan line at a pixel centre
        crosses = (ya > py) != (yb > py)
        x_cross = xa + (py - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (px < x_cross)
    mask[y0:y1, x0:x1] = inside
    return mask


def _regular_polygon(radius: float, n: int, phase: float) -> np.ndarray:
    angles = phase + 2.0 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _segment_quad(p: np.ndarray, q: np.ndarray, thickness: float) -> np.ndarray:
    """Rectangle of width ``thickness`` around segment p-q, extended by thickness/2 at both ends
    (a square-capped thick line), so that p and q lie well inside it."""
    d = q - p
    length = float(np.hypot(*d))
    u = d / length if length > 1e-9 else np.array([0.0, 1.0])
    n = np.array([-u[1], u[0]])
    h = thickness / 2.0
    a, b = p - u * h, q + u * h
    return np.stack([a + n * h, b + n * h, b - n * h, a - n * h])


def _make_shape(rng: np.random.Generator, name: str, size: float) -> List[np.ndarray]:
    """Polygons (centred at the origin) of one shape whose width is about ``size``."""
    if name == "square":
        half = size / 2.0
        corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        theta = rng.uniform(0.0, math.pi / 2.0)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        # A rotated square is wider than its side: shrink it so the bounding box stays ~size.
        return [corners @ rot.T / (abs(math.cos(theta)) + abs(math.sin(theta)))]
    if name == "circle":
        return [_regular_polygon(size / 2.0, _CIRCLE_VERTICES, rng.uniform(0.0, 2.0 * math.pi))]
    if name == "triangle":
        phase = rng.uniform(0.0, 2.0 * math.pi)
        angles = (
            phase + np.array([0.0, 2.0, 4.0]) * math.pi / 3.0 + rng.uniform(-0.25, 0.25, size=3)
        )
        radius = size / 2.0 * 1.1
        return [np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)]
    raise ValueError(f"unknown shape {name!r}; expected one of {SHAPE_CLASSES}")


def _make_person(rng: np.random.Generator, height: float) -> Tuple[List[np.ndarray], np.ndarray]:
    """A stick figure facing the camera, top of the head at y=0, centred on x=0.

    Returns its part polygons (head, torso, 8 limb segments) and its 17 keypoints (17 x 2, float,
    COCO order). Person's left = +x.
    """
    H = height
    t = max(3.0, 0.075 * H)  # limb thickness
    r = 0.11 * H  # head radius
    head_c = np.array([0.0, r])
    head = _regular_polygon(r, _HEAD_VERTICES, rng.uniform(0.0, 2.0 * math.pi)) + head_c
    yt, ht = 2.0 * r - 0.02 * H, 0.32 * H  # torso top (overlaps the head: the neck) and height
    top_half, bottom_half = 0.13 * H, 0.105 * H
    torso = np.array(
        [[-top_half, yt], [top_half, yt], [bottom_half, yt + ht], [-bottom_half, yt + ht]]
    )

    def limb_chain(
        start: np.ndarray, side: float, angle1: float, angle2: float, len1: float, len2: float
    ):
        # Angles are measured from "straight down", positive = away from the body's midline.
        d1 = np.array([side * math.sin(angle1), math.cos(angle1)])
        d2 = np.array([side * math.sin(angle2), math.cos(angle2)])
        mid = start + len1 * d1
        return mid, mid + len2 * d2

    keypoints: Dict[str, np.ndarray] = {
        "nose": head_c + np.array([0.0, 0.2 * r]),
        "left_eye": head_c + np.array([0.35 * r, -0.2 * r]),
        "right_eye": head_c + np.array([-0.35 * r, -0.2 * r]),
        "left_ear": head_c + np.array([0.7 * r, 0.0]),
        "right_ear": head_c + np.array([-0.7 * r, 0.0]),
    }
    limbs: List[np.ndarray] = []
    for side, prefix in ((1.0, "left_"), (-1.0, "right_")):
        shoulder = np.array([side * (top_half - t / 2.0), yt + t / 2.0])
        a1 = math.radians(rng.uniform(15.0, 100.0))
        a2 = a1 + math.radians(rng.uniform(-40.0, 60.0))
        elbow, wrist = limb_chain(shoulder, side, a1, a2, 0.17 * H, 0.15 * H)
        hip = np.array([side * (bottom_half - t / 2.0 - 0.01 * H), yt + ht - t / 2.0])
        b1 = math.radians(rng.uniform(0.0, 25.0))
        b2 = b1 + math.radians(rng.uniform(-15.0, 10.0))
        knee, ankle = limb_chain(hip, side, b1, b2, 0.21 * H, 0.2 * H)
        limbs += [
            _segment_quad(shoulder, elbow, t),
            _segment_quad(elbow, wrist, t),
            _segment_quad(hip, knee, t),
            _segment_quad(knee, ankle, t),
        ]
        keypoints.update(
            {
                prefix + "shoulder": shoulder,
                prefix + "elbow": elbow,
                prefix + "wrist": wrist,
                prefix + "hip": hip,
                prefix + "knee": knee,
                prefix + "ankle": ankle,
            }
        )
    kps = np.stack([keypoints[name] for name in COCO_PERSON_KEYPOINT_NAMES])
    return [head, torso] + limbs, kps


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float background, plain or lightly textured, and its base colour."""
    base = rng.uniform(30.0, 225.0, size=3)
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float64)
    kind = rng.integers(0, 3)
    if kind == 1:  # soft per-pixel noise
        img = img + rng.normal(0.0, 4.0, size=(size, size, 1))
    elif kind == 2:  # gentle gradient
        direction = rng.uniform(0.0, 2.0 * math.pi)
        ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
        ramp = (math.cos(direction) * xs + math.sin(direction) * ys)[..., None]
        img = img + 24.0 * ramp
    return img, base


def _object_colour(
    rng: np.random.Generator, background: np.ndarray, used: Sequence[np.ndarray]
) -> np.ndarray:
    """A random colour far (L1 >= 150) from the background and, if possible, from the other objects."""
    best, best_score = None, -1.0
    for _ in range(200):
        c = rng.integers(0, 256, size=3).astype(np.float64)
        d_bg = float(np.abs(c - background).sum())
        d_obj = min((float(np.abs(c - u).sum()) for u in used), default=1e9)
        score = min(d_bg, 2.0 * d_obj)
        if d_bg >= 150.0 and d_obj >= 60.0:
            return c
        if d_bg >= 150.0 and score > best_score:
            best, best_score = c, score
    if best is None:  # practically unreachable; fall back to the colour opposite the background
        best = np.where(background < 128.0, 255.0, 0.0)
    return best


def _round_polys(polys: Sequence[np.ndarray]) -> List[np.ndarray]:
    return [np.round(p, 2) for p in polys]


def _place(
    rng: np.random.Generator,
    polys: List[np.ndarray],
    size: int,
    placed: List[Tuple[float, float, float, float]],
    margin: float = 1.0,
    gap: float = 3.0,
    tries: int = 60,
) -> Optional[np.ndarray]:
    """A translation that puts all ``polys`` inside the image without touching ``placed`` boxes."""
    pts = np.concatenate(polys)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    w, h = hi - lo
    if w + 2 * margin > size or h + 2 * margin > size:
        return None
    for _ in range(tries):
        x = rng.uniform(margin, size - margin - w)
        y = rng.uniform(margin, size - margin - h)
        box = (x, y, x + w, y + h)
        if all(
            box[2] + gap <= b[0]
            or b[2] + gap <= box[0]
            or box[3] + gap <= b[1]
            or b[3] + gap <= box[1]
            for b in placed
        ):
            placed.append(box)
            return np.array([x, y]) - lo
    return None


def _render_image(rng: np.random.Generator, size: int, with_person: bool):
    """Draw one image. Returns (uint8 HxWx3 array, list of object dicts)."""
    canvas, base = _background(rng, size)
    canvas = canvas.copy()
    n_objects = int(rng.integers(1, 5))
    kinds = (["person"] if with_person else []) + [
        str(k) for k in rng.choice(SHAPE_CLASSES, size=n_objects - int(with_person))
    ]
    placed: List[Tuple[float, float, float, float]] = []
    colours: List[np.ndarray] = []
    objects = []
    for kind in kinds:
        if kind == "person":
            polys, kps = _make_person(rng, rng.uniform(0.42, 0.7) * size)
        else:
            polys, kps = _make_shape(rng, kind, rng.uniform(0.14, 0.3) * size), None
        offset = _place(rng, polys, size, placed)
        if offset is None:
            continue  # no room left: fewer objects in this image
        polys = _round_polys([p + offset for p in polys])
        mask = np.zeros((size, size), dtype=bool)
        for p in polys:
            mask |= _polygon_mask(p, size, size)
        colour = _object_colour(rng, base, colours)
        colours.append(colour)
        canvas[mask] = colour
        obj = {"category": kind, "polygons": polys, "mask": mask}
        if kps is not None:
            obj["keypoints"] = kps + offset
        objects.append(obj)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return image, objects


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
        "description": "Synthetic shapes and stick figures in COCO format (transfer/synthetic_coco.py)",
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
            pixels, objects = _render_image(rng, image_size, with_person=index % 4 != 3)
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
