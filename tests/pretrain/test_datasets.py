"""Datasets: the embedded digits split, folder datasets on tiny fake trees, and the user-facing errors."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import pretrain.data
from pretrain.config import get_default_config
from pretrain.data.augment import build_pretrain_transform, eval_transform
from pretrain.data.datasets import (
    IMAGENET100_CLASS_FILE,
    DatasetError,
    build_eval_datasets,
    build_pretrain_dataset,
    num_classes,
    read_class_list,
)
from pretrain.data.specs import KNOWN_TRAIN_SIZES

WNIDS = ["n01000001", "n01000002", "n01000003"]


def _cfg(name="digits", root="datasets", **data):
    cfg = get_default_config()
    cfg.DATA.NAME = name
    cfg.DATA.ROOT = str(root)
    for key, value in data.items():
        cfg.DATA[key] = value
    return cfg


def _write_image(path, seed=0, size=(20, 16), ext_format="PNG"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(
        path, ext_format
    )


def _fake_imagenet(root, wnids=WNIDS, per_class=2):
    """root/{train,val}/<wnid>/img_<i>.png with a few small random images."""
    for split in ("train", "val"):
        for c, wnid in enumerate(wnids):
            for i in range(per_class):
                _write_image(os.path.join(root, split, wnid, f"img_{i}.png"), seed=c * 10 + i)
    return root


def _fake_tiny(root, wnids=WNIDS, flat_val=True):
    """root/tiny-imagenet-200 with train/<wnid>/images/*.JPEG and a flat (official) or foldered val."""
    base = os.path.join(root, "tiny-imagenet-200")
    for c, wnid in enumerate(wnids):
        for i in range(2):
            _write_image(
                os.path.join(base, "train", wnid, "images", f"{wnid}_{i}.JPEG"),
                c * 10 + i,
                (64, 64),
                "JPEG",
            )
        with open(os.path.join(base, "train", wnid, f"{wnid}_boxes.txt"), "w") as handle:
            handle.write(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
    # val image k belongs to class (k + 1) % 3, so a label mix-up cannot pass unnoticed
    lines = []
    for k in range(6):
        wnid = wnids[(k + 1) % len(wnids)]
        name = f"val_{k}.JPEG"
        folder = (
            os.path.join(base, "val", "images") if flat_val else os.path.join(base, "val", wnid)
        )
        _write_image(os.path.join(folder, name), 100 + k, (64, 64), "JPEG")
        lines.append(f"{name}\t{wnid}\t1\t2\t30\t40\n")
    if flat_val:
        with open(os.path.join(base, "val", "val_annotations.txt"), "w") as handle:
            handle.writelines(lines)
    return base


# -- digits ---------------------------------------------------------------------------------------
def test_digits_split_sizes_and_labels():
    memory, test = build_eval_datasets(_cfg(), None)
    assert len(memory) == 1347 == KNOWN_TRAIN_SIZES["digits"]
    assert len(test) == 450
    for dataset in (memory, test):
        labels = np.array(dataset.targets)
        assert labels.min() == 0 and labels.max() == 9 and len(np.unique(labels)) == 10
    assert np.bincount(test.targets).min() >= 40  # stratified: about 45 per class


def test_digits_split_is_deterministic():
    first, second = build_eval_datasets(_cfg(), None), build_eval_datasets(_cfg(), None)
    for a, b in zip(first, second):
        assert a.targets == b.targets
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))


def test_digits_images_are_32px_rgb():
    image, label = build_pretrain_dataset(_cfg(), None)[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    assert 0 <= label <= 9
    pixels = np.asarray(image)
    assert pixels.dtype == np.uint8 and pixels.max() > 200  # 0..16 was rescaled to 0..255


def test_digits_items_through_pretrain_transform():
    cfg = _cfg()
    dataset = build_pretrain_dataset(cfg, build_pretrain_transform(cfg))
    assert len(dataset) == KNOWN_TRAIN_SIZES["digits"]
    views, label = dataset[5]
    assert len(views) == 4 and all(
        v.shape == (3, 32, 32) and v.dtype == torch.float32 for v in views
    )
    assert isinstance(label, int) and 0 <= label <= 9
    batch = torch.utils.data.default_collate([dataset[i] for i in range(3)])
    assert batch[0][0].shape == (3, 3, 32, 32) and batch[1].shape == (3,)


def test_num_classes_without_data():
    expected = {
        "digits": 10,
        "fashion_mnist": 10,
        "cifar10": 10,
        "cifar100": 100,
        "stl10": 10,
        "tiny_imagenet": 200,
        "imagenet100": 100,
        "imagenet": 1000,
    }
    for name, count in expected.items():
        assert num_classes(_cfg(name, root="/nonexistent")) == count
    assert set(KNOWN_TRAIN_SIZES) == set(expected)


def test_builtin_imagenet100_list_has_100_classes():
    package_dir = os.path.dirname(os.path.abspath(pretrain.data.__file__))
    assert IMAGENET100_CLASS_FILE == os.path.join(
        package_dir, "resources", "imagenet100_classes.txt"
    )
    names = read_class_list(IMAGENET100_CLASS_FILE)
    assert len(names) == 100 and all(n.startswith("n") and len(n) == 9 for n in names)


# -- missing data -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,expected",
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("stl10", "stl10_binary"),
        ("tiny_imagenet", "tiny-imagenet-200"),
        ("imagenet", "val_00000293"),
        ("imagenet100", "image-net.org"),
    ],
)
def test_missing_data_raises_with_layout(tmp_path, name, expected):
    cfg = _cfg(name, root=tmp_path / "absent")
    with pytest.raises(DatasetError) as info:
        build_pretrain_dataset(cfg, None)
    message = str(info.value)
    assert (
        expected in message and "Expected layout" in message and str(tmp_path / "absent") in message
    )
    with pytest.raises(DatasetError):
        build_eval_datasets(cfg, None)


def test_missing_cifar_message_mentions_download(tmp_path):
    with pytest.raises(DatasetError, match="DATA.DOWNLOAD True"):
        build_pretrain_dataset(_cfg("cifar10", root=tmp_path), None)


def test_missing_imagenet_val_is_reported(tmp_path):
    root = _fake_imagenet(str(tmp_path))
    os.rename(os.path.join(root, "val"), os.path.join(root, "validation"))
    with pytest.raises(DatasetError, match="val"):
        build_eval_datasets(_cfg("imagenet", root=root), None)


def test_corrupt_image_raises_dataset_error(tmp_path):
    root = _fake_imagenet(str(tmp_path))
    with open(os.path.join(root, "train", WNIDS[0], "img_0.png"), "wb") as handle:
        handle.write(b"not an image")
    dataset = build_pretrain_dataset(_cfg("imagenet", root=root, BAD_IMAGES="fail"), None)
    with pytest.raises(DatasetError, match="img_0.png"):
        dataset[0]


def test_class_list_rejected_for_non_folder_dataset(tmp_path):
    with pytest.raises(DatasetError, match="CLASS_LIST"):
        build_pretrain_dataset(_cfg("digits", CLASS_LIST=str(tmp_path / "list.txt")), None)


# -- folder datasets ---------------------------------------------------------------------------------
def test_fake_imagenet_loads(tmp_path):
    root = _fake_imagenet(str(tmp_path))
    cfg = _cfg("imagenet", root=root, IMAGE_SIZE=16)
    dataset = build_pretrain_dataset(cfg, build_pretrain_transform(cfg))
    assert len(dataset) == 6
    views, label = dataset[0]
    assert len(views) == 4 and views[0].shape == (3, 16, 16) and label == 0
    memory, test = build_eval_datasets(cfg, eval_transform(cfg))
    assert len(memory) == len(test) == 6 and memory.classes == test.classes == WNIDS
    image, label = test[5]
    assert image.shape == (3, 16, 16) and label == 2


def test_imagenet100_with_custom_class_list(tmp_path):
    root = _fake_imagenet(str(tmp_path / "data"))
    class_list = tmp_path / "classes.txt"
    class_list.write_text(f"# two of three\n{WNIDS[2]}\n\n{WNIDS[0]}\n")
    cfg = _cfg("imagenet100", root=root, CLASS_LIST=str(class_list))
    assert num_classes(cfg) == 2
    dataset = build_pretrain_dataset(cfg, None)
    assert dataset.classes == [WNIDS[0], WNIDS[2]] and len(dataset) == 4
    assert sorted(set(dataset.targets)) == [0, 1]
    image, _ = dataset[0]
    assert image.mode == "RGB"
    memory, test = build_eval_datasets(cfg, None)
    assert len(memory) == len(test) == 4


def test_class_list_naming_missing_classes_raises(tmp_path):
    root = _fake_imagenet(str(tmp_path / "data"))
    class_list = tmp_path / "classes.txt"
    class_list.write_text(f"{WNIDS[0]}\nn09999998\nn09999999\n")
    with pytest.raises(DatasetError) as info:
        build_pretrain_dataset(_cfg("imagenet", root=root, CLASS_LIST=str(class_list)), None)
    message = str(info.value)
    assert "2 of the 3 classes" in message and "n09999998" in message and "n09999999" in message


def test_builtin_imagenet100_list_missing_from_tree_raises(tmp_path):
    root = _fake_imagenet(str(tmp_path))
    with pytest.raises(DatasetError, match="100 of the 100 classes"):
        build_pretrain_dataset(_cfg("imagenet100", root=root), None)


def test_tiny_imagenet_flat_val_loads(tmp_path):
    _fake_tiny(str(tmp_path))
    cfg = _cfg("tiny_imagenet", root=tmp_path, IMAGE_SIZE=64)
    assert len(build_pretrain_dataset(cfg, None)) == 6
    memory, test = build_eval_datasets(cfg, eval_transform(cfg))
    assert len(memory) == 6 and len(test) == 6
    assert test.targets == [(k + 1) % 3 for k in range(6)]
    image, label = test[0]
    assert image.shape == (3, 64, 64) and label == 1


def test_tiny_imagenet_flat_val_with_class_list(tmp_path):
    _fake_tiny(str(tmp_path))
    class_list = tmp_path / "classes.txt"
    class_list.write_text(f"{WNIDS[1]}\n{WNIDS[2]}\n")
    cfg = _cfg("tiny_imagenet", root=tmp_path, CLASS_LIST=str(class_list))
    memory, test = build_eval_datasets(cfg, None)
    assert len(memory) == 4 and len(test) == 4 and sorted(set(test.targets)) == [0, 1]


def test_tiny_imagenet_reorganised_val_loads(tmp_path):
    _fake_tiny(str(tmp_path), flat_val=False)
    memory, test = build_eval_datasets(_cfg("tiny_imagenet", root=tmp_path), None)
    assert len(test) == 6 and test.classes == memory.classes == WNIDS


def test_tiny_imagenet_annotation_with_missing_image_raises(tmp_path):
    base = _fake_tiny(str(tmp_path))
    os.remove(os.path.join(base, "val", "images", "val_3.JPEG"))
    with pytest.raises(DatasetError, match="val_3.JPEG"):
        build_eval_datasets(_cfg("tiny_imagenet", root=tmp_path), None)


def test_the_registry_feeds_the_config_choices_and_describes_every_data_set():
    from pretrain.config import CHOICES
    from pretrain.data import fashion_mnist
    from pretrain.data.specs import DATASETS, SOURCES

    assert CHOICES["DATA.NAME"] == tuple(DATASETS)
    for name, spec in DATASETS.items():
        assert (
            spec.name == name
            and spec.source in SOURCES
            and spec.num_classes > 1
            and spec.train_size > 0
        )
        assert len(spec.splits) == 3
        if spec.source in (
            "torchvision",
            "folder",
        ):  # the data sets whose missing files show a layout
            assert spec.layout and spec.how_to_get, name
    assert DATASETS["fashion_mnist"].train_size == fashion_mnist.SPLIT_SIZES["train"]
    assert fashion_mnist.FOLDER == "fashion-mnist"
