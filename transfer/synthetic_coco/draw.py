"""Drawing the synthetic images: backgrounds, polygon shapes and stick-figure persons, with exact masks.

Every drawn pixel is a pixel whose centre lies in an annotation polygon, so the drawing, the polygons
and the masks COCO tools rasterise from them agree.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .categories import COCO_PERSON_KEYPOINT_NAMES, SHAPE_CLASSES

_CIRCLE_VERTICES = 32
_HEAD_VERTICES = 24


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


def render_image(rng: np.random.Generator, size: int, with_person: bool):
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
