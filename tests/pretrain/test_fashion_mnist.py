"""Fashion-MNIST: the IDX reader on small files written here, where the files are looked for, the errors.

The tests never need the real data or the Debian package: they write tiny IDX files themselves and
replace the package lookup.
"""

import gzip
import os
import struct

import numpy as np
import pytest

from pretrain.cli import dry_run_text
from pretrain.config import load_config
from pretrain.data import fashion_mnist
from pretrain.data.augment import build_pretrain_transform, eval_transform
from pretrain.data.datasets import (
    DatasetError,
    build_eval_datasets,
    build_pretrain_dataset,
    num_classes,
)

SIZES = {"train": 12, "test": 5}


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), big-endian uint32 sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path, data: bytes, gzipped: bool) -> str:
    path = path + ".gz" if gzipped else path
    with open(path, "wb") as handle:
        handle.write(gzip.compress(data) if gzipped else data)
    return path


def write_fake_fashion_mnist(folder, gzipped=True, seed=0) -> dict:
    """The four IDX files with a few random images (label i % 10) in ``folder``; returns the arrays."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, (images_name, labels_name) in fashion_mnist.FILES.items():
        images = rng.integers(0, 256, size=(SIZES[split], 28, 28), dtype=np.uint8)
        labels = (np.arange(SIZES[split]) * 3 % 10).astype(np.uint8)
        _write(os.path.join(folder, images_name), _idx_bytes(images), gzipped)
        _write(os.path.join(folder, labels_name), _idx_bytes(labels), gzipped)
        arrays[split] = (images, labels)
    return arrays


@pytest.fixture
def no_package(monkeypatch):
    """As on a machine without Debian's dataset-fashion-mnist."""
    monkeypatch.setattr(fashion_mnist, "debian_folder", lambda: None)


def _cfg(root, name="fashion_mnist_cpu.yaml"):
    return load_config(name, ["DATA.ROOT", str(root)])


@pytest.mark.parametrize("gzipped", [True, False])
def test_reads_the_original_images_and_labels(tmp_path, no_package, gzipped):
    arrays = write_fake_fashion_mnist(tmp_path / "fashion-mnist", gzipped=gzipped)
    train, test = build_eval_datasets(_cfg(tmp_path), transform=None)
    assert (len(train), len(test)) == (SIZES["train"], SIZES["test"])
    for dataset, split in ((train, "train"), (test, "test")):
        images, labels = arrays[split]
        for index in (0, len(dataset) - 1):
            image, label = dataset[index]
            assert image.mode == "L" and image.size == (
                28,
                28,
            )  # the original image; the transforms do the rest
            assert np.array_equal(np.asarray(image), images[index]) and label == int(labels[index])
    assert num_classes(_cfg(tmp_path)) == 10 and train.classes[9] == "Ankle boot"


def test_transforms_make_3_channel_32px_views(tmp_path, no_package):
    write_fake_fashion_mnist(tmp_path / "fashion-mnist")
    cfg = _cfg(tmp_path)
    views, _ = build_pretrain_dataset(cfg, build_pretrain_transform(cfg))[0]
    assert len(views) == 4 and all(v.shape == (3, 32, 32) for v in views)
    image, _ = build_eval_datasets(cfg, eval_transform(cfg))[1][0]
    assert image.shape == (3, 32, 32)


def test_falls_back_to_the_debian_package_folder(tmp_path, monkeypatch):
    package = tmp_path / "usr-share-datasets" / "fashion-mnist"
    write_fake_fashion_mnist(package)
    monkeypatch.setattr(fashion_mnist, "debian_folder", lambda: str(package))
    dataset = build_pretrain_dataset(_cfg(tmp_path / "empty-root"), transform=None)
    assert dataset.folder == str(package) and len(dataset) == SIZES["train"]


def test_data_root_comes_before_the_package(tmp_path, monkeypatch):
    own = tmp_path / "fashion-mnist"
    write_fake_fashion_mnist(own, seed=1)
    package = tmp_path / "package"
    write_fake_fashion_mnist(package, seed=2)
    monkeypatch.setattr(fashion_mnist, "debian_folder", lambda: str(package))
    assert build_pretrain_dataset(_cfg(tmp_path), transform=None).folder == str(own)


def test_debian_lookup_reads_dpkg_listing(monkeypatch):
    """debian_folder() parses `dpkg -L`: the folder of train-images-idx3-ubyte*, None when dpkg fails."""

    class Done:
        def __init__(self, code, out):
            self.returncode, self.stdout = code, out

    listing = "/.\n/usr/share/datasets/fashion-mnist\n/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz\n"
    fashion_mnist.debian_folder.cache_clear()
    monkeypatch.setattr(fashion_mnist.subprocess, "run", lambda *a, **k: Done(0, listing))
    assert fashion_mnist.debian_folder() == "/usr/share/datasets/fashion-mnist"
    fashion_mnist.debian_folder.cache_clear()
    monkeypatch.setattr(fashion_mnist.subprocess, "run", lambda *a, **k: Done(1, "not installed"))
    assert fashion_mnist.debian_folder() is None
    fashion_mnist.debian_folder.cache_clear()


def test_missing_files_error_gives_both_ways_to_get_them(tmp_path, no_package):
    folder = tmp_path / "fashion-mnist"
    write_fake_fashion_mnist(folder)
    os.remove(folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetError) as info:
        build_pretrain_dataset(_cfg(tmp_path), transform=None)
    message = str(info.value)
    assert (
        "missing from" in message and "t10k-labels-idx1-ubyte" in message.split("missing from")[1]
    )
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "zalandoresearch/fashion-mnist" in message and str(folder) in message


def _broken(tmp_path, make_bytes):
    """A data set folder whose train images file is replaced by make_bytes(original uncompressed bytes)."""
    folder = tmp_path / "fashion-mnist"
    write_fake_fashion_mnist(folder, gzipped=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(make_bytes(path.read_bytes()))
    return str(path)


@pytest.mark.parametrize(
    "make_bytes,expected",
    [
        (lambda raw: raw[:-100], "truncated or damaged"),
        (lambda raw: raw[:10], "ends inside its header"),
        (lambda raw: b"\x89PNG" + raw[4:], "does not start with an IDX magic number"),
        (lambda raw: bytes([0, 0, 0x08, 1]) + raw[4:], "expected 0x08 (unsigned bytes) with 3"),
        (lambda raw: gzip.compress(raw)[:50], "does not decompress"),
    ],
)
def test_a_wrong_or_truncated_file_names_itself(tmp_path, no_package, make_bytes, expected):
    path = _broken(tmp_path, make_bytes)
    with pytest.raises(DatasetError) as info:
        build_pretrain_dataset(_cfg(tmp_path), transform=None)
    assert path in str(info.value) and expected in str(info.value)


def test_images_and_labels_of_different_lengths_are_refused(tmp_path, no_package):
    folder = tmp_path / "fashion-mnist"
    write_fake_fashion_mnist(folder, gzipped=False)
    _write(
        str(folder / "train-labels-idx1-ubyte"),
        _idx_bytes(np.zeros(3, dtype=np.uint8)),
        gzipped=False,
    )
    with pytest.raises(DatasetError, match="holds 12 images but .* holds 3 labels"):
        build_pretrain_dataset(_cfg(tmp_path), transform=None)


@pytest.mark.parametrize("name", ["fashion_mnist_cpu.yaml", "fashion_mnist_200ep.yaml"])
def test_configs_dry_run_with_60000_training_images(name):
    cfg = load_config(name)
    assert (
        cfg.DATA.NAME == "fashion_mnist"
        and cfg.DATA.MEAN == [0.2860] * 3
        and cfg.DATA.STD == [0.3530] * 3
    )
    assert "num_train_images: 60000" in dry_run_text(cfg)


def test_paper_recipe_config():
    cfg = load_config("fashion_mnist_200ep.yaml")
    assert (
        cfg.MODEL.BACKBONE,
        cfg.MODEL.STEM,
        cfg.SOLVER.OPTIMIZER,
        cfg.SOLVER.BASE_LR,
        cfg.SOLVER.WEIGHT_DECAY,
        cfg.SOLVER.BATCH_SIZE,
        cfg.MSR.BETA_BASE,
        cfg.SOLVER.EPOCHS,
    ) == ("resnet18", "cifar", "sgd", 0.1, 5e-4, 256, 0.3, 200)
