"""Tests of the synthetic COCO data set (transfer/synthetic_coco/, tools/make_synthetic_coco.py)."""

import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pycocotools.coco as pycocotools_coco
import pytest
from PIL import Image

from transfer.synthetic_coco import (
    COCO_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    SHAPE_CLASSES,
    register_synthetic_coco,
    synthetic_coco_dataset_names,
    write_synthetic_coco,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPLITS = ("train2017", "val2017")
SIZE = 128


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic_coco"))
    summary = write_synthetic_coco(root, num_train=48, num_val=16, image_size=SIZE, seed=0)
    return root, summary


def _coco(root, kind, split):
    return pycocotools_coco.COCO(os.path.join(root, "annotations", f"{kind}_{split}.json"))


def _image(root, split, info):
    return np.asarray(Image.open(os.path.join(root, split, info["file_name"])))


def test_layout_and_summary(dataset):
    root, summary = dataset
    assert sorted(os.listdir(os.path.join(root, "annotations"))) == sorted(
        f"{kind}_{split}.json" for kind in ("instances", "person_keypoints") for split in SPLITS
    )
    for split, count in zip(SPLITS, (48, 16)):
        s = summary["splits"][split]
        assert s["images"] == count == len(os.listdir(os.path.join(root, split)))
        assert s["annotations"] == sum(s["per_category"].values())
        assert s["persons"] == s["per_category"]["person"] > 0
        assert all(s["per_category"][name] > 0 for name in SHAPE_CLASSES)
        coco = _coco(root, "instances", split)
        for info in coco.dataset["images"]:
            img = Image.open(os.path.join(root, split, info["file_name"]))
            assert img.mode == "RGB" and img.size == (info["width"], info["height"]) == (SIZE, SIZE)
            assert 1 <= len(coco.getAnnIds(imgIds=[info["id"]])) <= 4
    # ids unique across splits, persons shared between the instances and keypoints files
    ids = [
        a["id"] for split in SPLITS for a in _coco(root, "instances", split).dataset["annotations"]
    ]
    assert len(ids) == len(set(ids))
    img_ids = [
        i["id"] for split in SPLITS for i in _coco(root, "instances", split).dataset["images"]
    ]
    assert len(img_ids) == len(set(img_ids))


def test_categories_and_keypoint_schema(dataset):
    root, _ = dataset
    for split in SPLITS:
        inst = _coco(root, "instances", split)
        names = {c["name"] for c in inst.loadCats(inst.getCatIds())}
        assert names == {"person", *SHAPE_CLASSES}
        kp = _coco(root, "person_keypoints", split)
        (cat,) = kp.dataset["categories"]
        assert cat["name"] == "person" and cat["id"] == inst.getCatIds(catNms=["person"])[0]
        assert cat["keypoints"] == list(COCO_PERSON_KEYPOINT_NAMES) and len(cat["keypoints"]) == 17
        assert len(cat["skeleton"]) == 19
        assert all(1 <= i <= 17 for edge in cat["skeleton"] for i in edge)
        assert kp.dataset["images"] == inst.dataset["images"]
        persons = {a["id"]: a for a in inst.dataset["annotations"] if a["category_id"] == cat["id"]}
        assert {a["id"] for a in kp.dataset["annotations"]} == set(persons)
        for a in kp.dataset["annotations"]:
            p = persons[a["id"]]
            assert all(
                a[k] == p[k] for k in ("bbox", "segmentation", "area", "image_id", "category_id")
            )
    assert ("left_eye", "right_eye") in COCO_KEYPOINT_FLIP_MAP and len(COCO_KEYPOINT_FLIP_MAP) == 8


def test_geometry_polygons_in_bbox_in_image(dataset):
    root, _ = dataset
    for split in SPLITS:
        coco = _coco(root, "instances", split)
        for a in coco.dataset["annotations"]:
            assert a["iscrowd"] == 0 and a["area"] > 0
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0
            assert 0 <= x and 0 <= y and x + w <= SIZE + 1e-6 and y + h <= SIZE + 1e-6
            assert isinstance(a["segmentation"], list) and a["segmentation"]
            for poly in a["segmentation"]:
                assert len(poly) >= 6 and len(poly) % 2 == 0
                xs, ys = np.array(poly[0::2]), np.array(poly[1::2])
                assert xs.min() >= x - 1e-6 and xs.max() <= x + w + 1e-6
                assert ys.min() >= y - 1e-6 and ys.max() <= y + h + 1e-6
            # the bbox is tight around the polygons
            allx = np.concatenate([p[0::2] for p in a["segmentation"]])
            ally = np.concatenate([p[1::2] for p in a["segmentation"]])
            assert np.isclose(allx.min(), x) and np.isclose(ally.min(), y)
            assert np.isclose(allx.max(), x + w, atol=0.011) and np.isclose(
                ally.max(), y + h, atol=0.011
            )
            assert a["area"] <= w * h + 2 * (w + h) + 1


def test_masks_match_area_and_drawing(dataset):
    root, _ = dataset
    for split in SPLITS:
        coco = _coco(root, "instances", split)
        for info in coco.dataset["images"]:
            img = _image(root, split, info).astype(np.int32)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]]))
            masks = [coco.annToMask(a).astype(bool) for a in anns]
            union = np.zeros(img.shape[:2], dtype=bool)
            for m in masks:
                assert not (union & m).any(), "objects must not overlap"
                union |= m
            background = img[~union]
            bg_median = np.median(background, axis=0)
            object_colours = []
            for a, m in zip(anns, masks):
                assert abs(m.sum() - a["area"]) <= max(4, 0.05 * a["area"]), (
                    a["id"],
                    m.sum(),
                    a["area"],
                )
                pix = img[m]
                colour = np.median(pix, axis=0)
                # the mask covers one solid drawn colour (a few boundary pixels may disagree) ...
                same = np.abs(pix - colour).sum(axis=1) <= 3
                assert same.mean() >= 0.9, (a["id"], same.mean())
                # ... that differs clearly from the background
                assert np.abs(colour - bg_median).sum() >= 100, (a["id"], colour, bg_median)
                object_colours.append(colour)
            # and nothing drawn lies outside the masks: background pixels keep the background colour
            for colour in object_colours:
                stray = (np.abs(background - colour).sum(axis=1) <= 3).mean()
                assert stray <= 0.01, (info["id"], stray)


def test_keypoints_on_the_figure(dataset):
    root, _ = dataset
    name_index = {n: i for i, n in enumerate(COCO_PERSON_KEYPOINT_NAMES)}
    n_persons = 0
    for split in SPLITS:
        coco = _coco(root, "person_keypoints", split)
        for a in coco.dataset["annotations"]:
            n_persons += 1
            kps = np.array(a["keypoints"], dtype=np.float64).reshape(-1, 3)
            assert kps.shape == (17, 3) and a["num_keypoints"] == 17
            assert (kps[:, 2] == 2).all()
            x, y, w, h = a["bbox"]
            # Detectron2 reads COCO keypoints as pixel indices and adds 0.5
            cx, cy = kps[:, 0] + 0.5, kps[:, 1] + 0.5
            assert (
                (cx >= x).all() and (cx <= x + w).all() and (cy >= y).all() and (cy <= y + h).all()
            )
            mask = coco.annToMask(a).astype(bool)
            assert mask[kps[:, 1].astype(int), kps[:, 0].astype(int)].all(), (
                "keypoints must sit on drawn parts"
            )
            k = {n: kps[i, :2] for n, i in name_index.items()}
            # facing the camera: the person's left is on the image's right
            for part in ("eye", "ear", "shoulder", "hip"):
                assert k["left_" + part][0] > k["right_" + part][0], part
            for side in ("left_", "right_"):
                assert k[side + "eye"][1] < k[side + "shoulder"][1] < k[side + "hip"][1]
                assert k[side + "hip"][1] < k[side + "knee"][1] < k[side + "ankle"][1]
            assert k["left_eye"][1] <= k["nose"][1] < k["left_shoulder"][1]
    assert n_persons == 48  # one person in three images of four


def test_deterministic_for_a_seed(tmp_path):
    a = write_synthetic_coco(str(tmp_path / "a"), num_train=5, num_val=3, seed=7)
    b = write_synthetic_coco(str(tmp_path / "b"), num_train=5, num_val=3, seed=7)
    c = write_synthetic_coco(str(tmp_path / "c"), num_train=5, num_val=3, seed=8)
    for split in SPLITS:
        files = sorted(os.listdir(os.path.join(a["root"], split)))
        assert files == sorted(os.listdir(os.path.join(b["root"], split)))
        _, mismatch, errors = filecmp.cmpfiles(
            os.path.join(a["root"], split), os.path.join(b["root"], split), files, shallow=False
        )
        assert not mismatch and not errors
        for kind in ("instances", "person_keypoints"):
            name = f"{kind}_{split}.json"
            ja, jb, jc = (
                open(os.path.join(s["root"], "annotations", name)).read() for s in (a, b, c)
            )
            assert ja == jb
            assert json.loads(ja)["annotations"] != json.loads(jc)["annotations"]
    # rewriting a root with fewer images removes the now stale images
    write_synthetic_coco(a["root"], num_train=2, num_val=1, seed=7)
    assert len(os.listdir(os.path.join(a["root"], "train2017"))) == 2
    assert len(os.listdir(os.path.join(a["root"], "val2017"))) == 1


def test_other_image_size(tmp_path):
    summary = write_synthetic_coco(str(tmp_path), num_train=3, num_val=2, image_size=64, seed=1)
    coco = _coco(summary["root"], "person_keypoints", "val2017")
    assert all(i["width"] == i["height"] == 64 for i in coco.dataset["images"])
    for a in coco.dataset["annotations"]:
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64


@pytest.mark.parametrize(
    "kwargs", [dict(num_train=0), dict(num_val=-1), dict(image_size=16), dict(num_train=2.5)]
)
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        write_synthetic_coco(str(tmp_path), **kwargs)


def test_cli(tmp_path):
    out = tmp_path / "coco"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "make_synthetic_coco.py"),
            str(out),
            "--num-train",
            "3",
            "--num-val",
            "2",
            "--image-size",
            "64",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "train2017: 3 images" in proc.stdout and "val2017: 2 images" in proc.stdout
    assert (out / "annotations" / "person_keypoints_val2017.json").exists()
    bad = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "make_synthetic_coco.py"),
            str(out),
            "--image-size",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "image_size" in bad.stderr and "Traceback" not in bad.stderr


def _detectron2():
    from transfer import d2compat

    d2compat.apply()
    from detectron2.data import DatasetCatalog, MetadataCatalog

    return DatasetCatalog, MetadataCatalog


def test_register_with_detectron2(dataset, tmp_path):
    DatasetCatalog, MetadataCatalog = _detectron2()
    root, summary = dataset
    prefix = "test_synthetic_coco"
    names = register_synthetic_coco(root, prefix=prefix)
    assert (
        names
        == synthetic_coco_dataset_names(prefix)
        == [
            f"{prefix}_instances_train",
            f"{prefix}_instances_val",
            f"{prefix}_keypoints_train",
            f"{prefix}_keypoints_val",
        ]
    )
    assert register_synthetic_coco(root, prefix=prefix) == names  # idempotent
    for name in names:
        split = "train2017" if name.endswith("_train") else "val2017"
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == summary["splits"][split]["images"]
        anns = [a for d in dicts for a in d["annotations"]]
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "coco" and os.path.isfile(meta.json_file)
        if "_keypoints_" in name:
            assert len(anns) == summary["splits"][split]["persons"] > 0
            assert all(len(a["keypoints"]) == 51 for a in anns)
            assert list(meta.keypoint_names) == list(COCO_PERSON_KEYPOINT_NAMES)
            assert len(meta.keypoint_names) == 17
            assert dict(meta.keypoint_flip_map) == dict(COCO_KEYPOINT_FLIP_MAP)
            assert meta.keypoint_connection_rules and meta.thing_classes == ["person"]
        else:
            assert len(anns) == summary["splits"][split]["annotations"]
            assert all(a["segmentation"] and len(a["bbox"]) == 4 for a in anns)
            assert meta.thing_classes == ["person", *SHAPE_CLASSES]
            assert sorted({a["category_id"] for a in anns}) == [0, 1, 2, 3]  # contiguous ids
    # another root: the names now point there
    other = write_synthetic_coco(str(tmp_path / "other"), num_train=2, num_val=1, seed=5)
    assert register_synthetic_coco(other["root"], prefix=prefix) == names
    assert len(DatasetCatalog.get(f"{prefix}_keypoints_train")) == 2
    assert MetadataCatalog.get(f"{prefix}_instances_val").image_root == os.path.join(
        other["root"], "val2017"
    )
    with pytest.raises(FileNotFoundError, match="make_synthetic_coco"):
        register_synthetic_coco(str(tmp_path / "missing"), prefix=prefix)
