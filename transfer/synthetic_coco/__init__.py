"""A small COCO-format data set of drawn shapes (drawn in draw.py, written by coco_json.py, registered by
register.py), for CPU demos and tests of Detectron2 fine-tuning.

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

from .categories import (
    CATEGORIES,
    COCO_KEYPOINT_CONNECTION_RULES,
    COCO_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    COCO_PERSON_SKELETON,
    PERSON_CATEGORY_ID,
    SHAPE_CLASSES,
    THING_CLASSES,
)
from .coco_json import SPLITS, write_synthetic_coco
from .register import register_synthetic_coco, synthetic_coco_dataset_names

__all__ = [
    "CATEGORIES",
    "COCO_KEYPOINT_CONNECTION_RULES",
    "COCO_KEYPOINT_FLIP_MAP",
    "COCO_PERSON_KEYPOINT_NAMES",
    "COCO_PERSON_SKELETON",
    "PERSON_CATEGORY_ID",
    "SHAPE_CLASSES",
    "SPLITS",
    "THING_CLASSES",
    "register_synthetic_coco",
    "synthetic_coco_dataset_names",
    "write_synthetic_coco",
]
