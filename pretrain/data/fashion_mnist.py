"""Fashion-MNIST: 70,000 real 28x28 grayscale photographs of clothing in 10 classes, read offline.

The data comes as the four standard IDX files (gzipped or not), found in ``DATA.ROOT/fashion-mnist/``
or, when they are not there, in the folder where Debian's ``dataset-fashion-mnist`` package installs
them (``dpkg -L dataset-fashion-mnist`` lists it). The reader is a small numpy parser of the IDX
format that checks the magic number and the sizes, so a truncated or wrong file raises a
DatasetError naming it instead of a reshape error. Items are the original 28x28 images (PIL mode
"L") with their labels: conversion to 3 channels and resizing to the crop size happen in the
transforms, as for every other data set.
"""

from __future__ import annotations

import functools
import gzip
import os
import subprocess
from collections.abc import Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from pretrain.data.datasets import (
    DatasetError,  # datasets.py imports this module lazily, so no cycle
)
from pretrain.data.specs import DATASETS

FOLDER = DATASETS[
    "fashion_mnist"
].folder  # sub-folder of DATA.ROOT looked at first ("fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
IMAGE_SIDE = 28
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPLIT_SIZES = {"train": 60000, "test": 10000}  # of the official files (for --dry-run)
FILES = {  # split -> (images, labels), the names of the official distribution without ".gz"
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_UBYTE = 0x08  # IDX type code of unsigned bytes
GZIP_MAGIC = b"\x1f\x8b"


def how_to_get(root: str) -> str:
    """Both ways to get the files, for error messages."""
    names = ", ".join(name + "[.gz]" for pair in FILES.values() for name in pair)
    return (
        f"Get them in one of two ways: (1) the OS package: `apt-get update && apt-get install -y "
        f"{DEBIAN_PACKAGE}` (Debian/Ubuntu; found automatically), or (2) download the four files {names} "
        f"from the `data/fashion` folder of the Zalando repository https://github.com/zalandoresearch/"
        f"fashion-mnist and put them in {os.path.join(os.path.abspath(root), FOLDER)}/."
    )


@functools.lru_cache(maxsize=1)
def debian_folder() -> str | None:
    """The folder holding the IDX files of the installed Debian package, or None (no package, no dpkg)."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if listing.returncode != 0:
        return None
    for line in listing.stdout.splitlines():
        if os.path.basename(line.strip()).startswith(FILES["train"][0]):
            return os.path.dirname(line.strip())
    return None


def _file_in(folder: str, name: str) -> str | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (the plain file first)."""
    for candidate in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.isfile(candidate):
            return candidate
    return None


def find_files(root: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """(folder, {split: (images path, labels path)}) from DATA.ROOT/fashion-mnist, else the Debian folder.

    A folder counts only when it holds all four files; otherwise the error says what is missing where.
    """
    own = os.path.join(root, FOLDER)
    searched = [own]
    folders = [own]
    package = debian_folder()
    if package:
        folders.append(package)
        searched.append(f"{package} (package {DEBIAN_PACKAGE})")
    for folder in folders:
        found = {
            split: tuple(_file_in(folder, name) for name in pair) for split, pair in FILES.items()
        }
        if all(path for pair in found.values() for path in pair):
            return folder, found
    missing = [name for pair in FILES.values() for name in pair if not _file_in(own, name)]
    raise DatasetError(
        f"Dataset 'fashion_mnist': the IDX files were not found. Looked in {' and '.join(searched)}; missing "
        f"from {os.path.abspath(own)}: {', '.join(missing)}. {how_to_get(root)} If the files are elsewhere, "
        f"point DATA.ROOT at the folder that holds {FOLDER}/."
    )


def _read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it is gzip data (by its magic, whatever its name)."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as err:  # truncated or damaged gzip stream
        raise DatasetError(
            f"Cannot read {path}: it is gzip data but does not decompress ({err}); the file is "
            f"truncated or damaged. Replace it with a good copy."
        ) from None


def read_idx(path: str, expected_dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes as a numpy array of its declared shape.

    IDX: two zero bytes, the type code (0x08 = unsigned byte), the number of dimensions, then one
    big-endian uint32 per dimension, then the data. Checked: the magic, the dimension count, and that
    the data is exactly as long as the shape says.
    """
    data = _read_bytes(path)
    problem = None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        problem = "it does not start with an IDX magic number (two zero bytes, type, dimensions)"
    elif data[2] != IDX_UBYTE or data[3] != expected_dims:
        problem = (
            f"its magic number 0x{int.from_bytes(data[:4], 'big'):08x} says type 0x{data[2]:02x} with "
            f"{data[3]} dimension(s); expected 0x{IDX_UBYTE:02x} (unsigned bytes) with {expected_dims}"
        )
    else:
        header = 4 + 4 * expected_dims
        shape = (
            tuple(int(v) for v in np.frombuffer(data[4:header], dtype=">u4"))
            if len(data) >= header
            else None
        )
        if shape is None:
            problem = f"it ends inside its header ({len(data)} bytes)"
        elif len(data) - header != int(np.prod(shape)):
            problem = (
                f"its header declares shape {shape} ({int(np.prod(shape))} bytes of data) but it holds "
                f"{len(data) - header} bytes: it is truncated or damaged"
            )
    if problem:
        raise DatasetError(
            f"Cannot read the IDX file {path}: {problem}. Replace it with a good copy of the "
            f"official file."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_split(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N int64) of one split, the two files checked against each other."""
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DatasetError(
            f"{images_path} holds images of {images.shape[1]}x{images.shape[2]} pixels; Fashion-MNIST "
            f"images are {IMAGE_SIDE}x{IMAGE_SIDE}. Replace it with the official file."
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            f"the two files must come from the same split. Replace them with the official files."
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DatasetError(
            f"{labels_path} holds label {int(labels.max())}; Fashion-MNIST labels are 0-9. Replace "
            f"it with the official file."
        )
    return images, labels.astype(np.int64)


class FashionMNIST(Dataset):
    """One split of Fashion-MNIST held in memory (47 MB for train); items are (transform(L image), label)."""

    def __init__(self, root: str, split: str = "train", transform: Callable | None = None):
        if split not in FILES:
            raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
        self.folder, paths = find_files(root)
        self.images, labels = load_split(*paths[split])
        self.targets = labels.tolist()
        self.classes = list(CLASSES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])  # 2-D uint8: mode "L"
        return (self.transform(image) if self.transform is not None else image), self.targets[index]
