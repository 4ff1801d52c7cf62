"""The categories of the synthetic COCO data set and COCO's person-keypoint conventions."""

from __future__ import annotations

from typing import List, Tuple

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
