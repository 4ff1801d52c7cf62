"""Datasets for pretraining and evaluation, chosen by ``cfg.DATA.NAME``.

Every dataset yields ``(transform(image), label)`` with ``image`` an RGB PIL image; the label
is -1 for unlabeled images (STL-10's unlabeled split). Supported names:

- ``digits``: scikit-learn's embedded ``load_digits`` (no download, always available), 1797
  8x8 grayscale digits upsampled to 32x32 RGB so crops act at CIFAR scale. Fixed stratified
  split (25 % test, ``random_state=0``): 1347 train images, 450 test images.
- ``fashion_mnist``: Fashion-MNIST's four IDX files (60000 train / 10000 test real 28x28 grayscale
  images, 10 classes) from DATA.ROOT/fashion-mnist/ or Debian's ``dataset-fashion-mnist`` package,
  see ``pretrain/data/fashion_mnist.py``; the transforms make them 3-channel and resize them.
- ``cifar10``, ``cifar100``, ``stl10``: torchvision datasets under DATA.ROOT, downloaded only when
  DATA.DOWNLOAD is true. STL-10 pretrains on "train+unlabeled" (105000 images).
- ``tiny_imagenet``: DATA.ROOT/tiny-imagenet-200 as unzipped from the official archive (flat
  val/images with val_annotations.txt) or with val/ reorganised into class folders.
- ``imagenet``: DATA.ROOT/{train,val}/<wnid>/*.JPEG.
- ``imagenet100``: the same tree restricted to the 100 CMC classes (resources/imagenet100_classes.txt).

DATA.CLASS_LIST (a text file, one wnid per line) restricts any folder-based dataset to the
listed classes; labels follow the sorted order of the class names, as in torchvision's ImageFolder.
Problems the user must fix raise :class:`DatasetError` with the expected layout and the fix.

Folder datasets read every file with :func:`load_rgb_image`, which decodes it fully and converts any
mode to 8-bit RGB (16-bit gray scaled, transparency composited onto white). A file that cannot be
decoded follows DATA.BAD_IMAGES: "fail" raises :class:`BadImageError` naming it; "skip" warns once per
process, uses the next image instead and counts it, see :func:`bad_image_report`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import datasets as tvd
from torchvision.datasets.folder import IMG_EXTENSIONS

from pretrain.config import CHOICES, get_default_config
from pretrain.data.specs import DATASETS
from pretrain.utils.errors import UserError

# -- digits split, fixed so that every run (and --dry-run) sees the same images ------------------
DIGITS_NUM_IMAGES = 1797
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0
DIGITS_IMAGE_SIZE = 32
DIGITS_TEST_SIZE = math.ceil(DIGITS_NUM_IMAGES * DIGITS_TEST_FRACTION)  # 450 (sklearn rounds up)
DIGITS_TRAIN_SIZE = DIGITS_NUM_IMAGES - DIGITS_TEST_SIZE  # 1347

IMAGENET100_CLASS_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "resources", "imagenet100_classes.txt"
)


class DatasetError(UserError, RuntimeError):
    """A dataset problem the user must fix (missing or malformed data); the message says how."""


# =================================================================================================
# Messages: expected layouts and where to get the data
# =================================================================================================
def _layout_text(name: str, root: str) -> str:
    """The folder tree expected under DATA.ROOT, with the absolute root on the first line."""
    body = "\n".join("    " + line for line in DATASETS[name].layout.splitlines())
    return f"  {os.path.abspath(root)}/\n{body}"


def _missing_data_error(name: str, root: str, problem: str) -> DatasetError:
    """A DatasetError that states the problem, shows the expected layout and says how to get the data."""
    return DatasetError(
        f"Dataset '{name}': {problem}\nExpected layout under DATA.ROOT ({root!r}):\n{_layout_text(name, root)}\n"
        f"How to get it: {DATASETS[name].how_to_get}. If the data is elsewhere, point DATA.ROOT at the folder "
        f"that holds it (shown at the top of the tree)."
    )


def _require_dir(path: str, name: str, root: str) -> None:
    """Raise the layout error when a folder the dataset needs is absent."""
    if not os.path.isdir(path):
        raise _missing_data_error(name, root, f"folder {os.path.abspath(path)} does not exist.")


# =================================================================================================
# Image loading: any PIL mode -> 8-bit RGB; undecodable files -> BadImageError
# =================================================================================================
logger = logging.getLogger("pretrain")

# Transparent pixels (alpha channel, or a transparent palette / colour key) are composited onto white:
# such files are mostly clip art and logos drawn for a white page, whose dark strokes vanish on black.
TRANSPARENT_BACKGROUND = (255, 255, 255)
GRAY_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# What PIL raises for files it cannot decode (zlib/struct errors escape from some damaged PNG/TIFF files).
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)

BAD_IMAGE_POLICIES = CHOICES["DATA.BAD_IMAGES"]
DEFAULT_BAD_IMAGES = get_default_config().DATA.BAD_IMAGES
MAX_CONSECUTIVE_BAD_IMAGES = 10  # under "skip", how many files in a row may fail before giving up


class BadImageError(DatasetError):
    """An image file that cannot be decoded; the message names the file, PIL's error and the fix.

    Constructible from the message alone, so that a DataLoader worker re-raises it with its own type.
    """

    def __init__(self, message: str, path: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.path, self.reason = path, reason


def _gray_to_8bit(image: Image.Image) -> Image.Image:
    """A high-depth grayscale image (I;16*, I, F) as mode L, scaled rather than clipped.

    I;16 and I are taken as 16-bit (0..65535 -> 0..255, values outside clipped); F is taken as
    0..1 when all its values lie in [0, 1], else as 0..255 (clipped). PIL's own convert("L") clips
    I;16 and I at 255, which turns almost every 16-bit image white.
    """
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0
    return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), "L")


def _composite_on_background(image: Image.Image) -> Image.Image:
    """An image with transparency (alpha band, transparent palette or colour key) flattened to RGB."""
    if image.mode == "La":  # premultiplied L+alpha: PIL converts it to RGBA only through LA
        image = image.convert("LA")
    rgba = image.convert(
        "RGBA"
    )  # a palette goes through RGBA, which also avoids PIL's transparency warning
    background = Image.new("RGBA", rgba.size, TRANSPARENT_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: 16-bit/int/float gray scaled to 8 bit, transparency composited onto
    TRANSPARENT_BACKGROUND (white), everything else (L, 1, P, CMYK, YCbCr, ...) by PIL's conversion."""
    if image.mode in GRAY_16BIT_MODES or image.mode in ("I", "F"):
        image = _gray_to_8bit(image)
    elif image.has_transparency_data:
        return _composite_on_background(image)
    return image.convert("RGB")  # a copy even for RGB: the result outlives the opened file


def _failure_reason(path: str, err: Exception) -> str:
    """PIL's (or the OS's) error as one phrase, saying so plainly when the file is empty."""
    try:
        if os.path.getsize(path) == 0:
            return "the file is empty (0 bytes)"
    except OSError:
        pass
    if isinstance(err, UnidentifiedImageError):  # its text repeats the path
        return "UnidentifiedImageError: PIL recognises no image format in it"
    return f"{type(err).__name__}: {err}"


def load_rgb_image(path: str) -> Image.Image:
    """Decode an image file fully and return it as 8-bit RGB (see :func:`to_rgb`).

    Decoding happens here, not lazily in a later transform, so a truncated or corrupt file raises
    :class:`BadImageError` naming it. PIL's global LOAD_TRUNCATED_IMAGES is left alone: a truncated file is bad.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except DECODE_ERRORS as err:
        reason = _failure_reason(path, err)
        problem = (
            "cannot be opened"
            if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError))
            else "is corrupt, truncated or not an image"
        )
        raise BadImageError(
            f"Cannot read image {path}: {reason}. The file {problem}. Remove it or replace it with a good copy, "
            f"or set DATA.BAD_IMAGES skip to skip such files with a warning.",
            path=path,
            reason=reason,
        ) from None


# -- bad files under DATA.BAD_IMAGES --------------------------------------------------------------
_warned_paths = set()  # files already reported by this process


def check_bad_images_policy(policy: str) -> str:
    """The DATA.BAD_IMAGES value, checked to be one of BAD_IMAGE_POLICIES."""
    if policy not in BAD_IMAGE_POLICIES:
        raise DatasetError(
            f"DATA.BAD_IMAGES is {policy!r}; choose one of: {', '.join(BAD_IMAGE_POLICIES)}."
        )
    return policy


def _warn_skipped(path: str, err: BadImageError) -> None:
    """Log a skipped file once per process (a file is met again every epoch)."""
    if path in _warned_paths:
        return
    _warned_paths.add(path)
    logger.warning(
        "Skipping unreadable image %s (%s); the next image of the data set is used in its place "
        "(DATA.BAD_IMAGES skip). Remove or replace the file, or set DATA.BAD_IMAGES fail to stop "
        "on such files.",
        path,
        err.reason,
    )


class FaultTolerantFiles:
    """Mixin for datasets of ``self.samples`` = [(path, label)]: loading under the DATA.BAD_IMAGES policy.

    "fail" raises BadImageError for an undecodable file. "skip" logs it, marks it and returns the next
    readable sample (wrapping around), so batches keep their size; after MAX_CONSECUTIVE_BAD_IMAGES
    bad files in a row it raises DatasetError. The marks live in shared memory created in the
    constructor, which DataLoader workers inherit when they start (fork or spawn), so
    :func:`bad_image_report` in the main process sees the files that any worker skipped.
    """

    samples: list[tuple[str, int]]

    def _init_bad_images(self, policy: str) -> None:
        self.bad_images = check_bad_images_policy(policy)
        # One byte per sample (1 = skipped), without a lock: each writer only ever sets bytes to 1.
        self._skipped_flags = multiprocessing.Array("B", max(len(self.samples), 1), lock=False)

    @property
    def skipped_count(self) -> int:
        """How many distinct files of this data set were skipped so far, by any process."""
        return int(np.count_nonzero(np.frombuffer(self._skipped_flags, dtype=np.uint8)))

    def load_sample(self, index: int) -> tuple[Image.Image, int]:
        """(RGB image, label) of sample ``index``; under "skip", of the next readable sample."""
        if self.bad_images == "fail":
            path, label = self.samples[index]
            return load_rgb_image(path), label
        size = len(self.samples)
        tries = min(MAX_CONSECUTIVE_BAD_IMAGES, size)
        for step in range(tries):
            current = (index + step) % size
            path, label = self.samples[current]
            try:
                return load_rgb_image(path), label
            except BadImageError as err:
                self._skipped_flags[current] = 1
                _warn_skipped(path, err)
        first = self.samples[index % size][0]
        raise DatasetError(
            f"{tries} consecutive image files, starting at {first}, could not be read (see the warnings above); "
            f"too many consecutive bad files for DATA.BAD_IMAGES skip. The data is probably damaged or not "
            f"images at all: check the folder, re-extract or re-download the data set."
        )


def _fault_tolerant_parts(dataset, depth: int = 0) -> Iterator[FaultTolerantFiles]:
    """The FaultTolerantFiles data sets inside ``dataset``, looking through ``.dataset`` (Subset, seeded or
    other wrappers, a DataLoader) and ``.datasets`` (ConcatDataset)."""
    if depth > 20 or dataset is None:
        return
    if isinstance(dataset, FaultTolerantFiles):
        yield dataset
        return
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        yield from _fault_tolerant_parts(inner, depth + 1)
    for part in getattr(dataset, "datasets", None) or ():
        yield from _fault_tolerant_parts(part, depth + 1)


def bad_image_count(dataset) -> int:
    """Distinct unreadable files skipped so far in ``dataset`` (wrappers are looked through); 0 if none."""
    parts = {id(part): part for part in _fault_tolerant_parts(dataset)}
    return sum(part.skipped_count for part in parts.values())


def bad_image_report(dataset) -> str | None:
    """A one-line summary of the unreadable files skipped so far in ``dataset``, or None when none were."""
    count = bad_image_count(dataset)
    if not count:
        return None
    return (
        f"{count} unreadable image(s) were skipped (DATA.BAD_IMAGES skip); "
        f"see the warnings above for their paths"
    )


# =================================================================================================
# Generic folder datasets
# =================================================================================================
class LabeledFiles(FaultTolerantFiles, Dataset):
    """A list of (image path, label) pairs read with PIL, yielding ``(transform(image), label)``."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Callable | None = None,
        bad_images: str = DEFAULT_BAD_IMAGES,
    ):
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.classes = list(classes)
        self.transform = transform
        self._init_bad_images(bad_images)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image, label = self.load_sample(index)
        return (self.transform(image) if self.transform is not None else image), label


class ClassListImageFolder(FaultTolerantFiles, tvd.ImageFolder):
    """torchvision's ImageFolder, optionally restricted to a given list of class folders.

    With ``classes`` given, only those folders are read and labels follow their sorted order, so
    a train and a val folder built with the same list get the same labels. Listed classes missing
    from the tree, and class folders without image files, raise DatasetError naming them. Files
    that cannot be decoded follow the ``bad_images`` policy (see :class:`FaultTolerantFiles`).
    """

    def __init__(
        self,
        root: str,
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        list_source: str = "the class list",
        bad_images: str = DEFAULT_BAD_IMAGES,
    ):
        self.wanted_classes = sorted(set(classes)) if classes is not None else None
        self.list_source = list_source
        try:
            # allow_empty: empty class folders are reported below, by name and with the fix
            super().__init__(root, transform=transform, loader=load_rgb_image, allow_empty=True)
        except FileNotFoundError as err:  # no class folders at all
            raise DatasetError(
                f"{os.path.abspath(root)} holds no usable images: {err}. Each class needs a folder "
                f"<wnid>/ with image files ({', '.join(IMG_EXTENSIONS)})."
            ) from None
        self._check_no_empty_classes()
        self._init_bad_images(bad_images)

    def _check_no_empty_classes(self) -> None:
        """Raise DatasetError naming the class folders that hold no image files."""
        empty = sorted(set(self.classes) - {self.classes[label] for label in set(self.targets)})
        if not empty:
            return
        folders = [os.path.join(os.path.abspath(self.root), name) for name in empty]
        shown = ", ".join(folders[:10]) + (
            f" ... ({len(folders)} in all)" if len(folders) > 10 else ""
        )
        raise DatasetError(
            f"{len(empty)} class folder(s) hold no image files ({', '.join(IMG_EXTENSIONS)}): {shown}. "
            f"Add images to them, or remove those folders, or set DATA.CLASS_LIST to a file listing only the "
            f"classes to use."
        )

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """All class folders (ImageFolder's rule), or the wanted ones after checking they exist."""
        if self.wanted_classes is None:
            return super().find_classes(directory)
        missing = [
            name for name in self.wanted_classes if not os.path.isdir(os.path.join(directory, name))
        ]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise DatasetError(
                f"{len(missing)} of the {len(self.wanted_classes)} classes listed in {self.list_source} are "
                f"missing from {os.path.abspath(directory)}: {shown}. Add those class folders, or set "
                f"DATA.CLASS_LIST to a file listing only classes present in the tree."
            )
        return list(self.wanted_classes), {name: i for i, name in enumerate(self.wanted_classes)}

    def __getitem__(self, index: int):
        image, label = self.load_sample(index)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label


# =================================================================================================
# Class lists
# =================================================================================================
def read_class_list(path: str) -> list[str]:
    """Class names from a text file: one per line; blank lines and '#' comments are ignored."""
    if not os.path.isfile(path):
        raise DatasetError(
            f"Class list file {os.path.abspath(path)} (DATA.CLASS_LIST) does not exist. "
            f"Give a text file with one class folder name (wnid) per line, or set "
            f"DATA.CLASS_LIST '' to use all classes."
        )
    with open(path, "r", encoding="utf-8") as handle:
        names = [line.split("#", 1)[0].strip() for line in handle]
    names = [name for name in names if name]
    if not names:
        raise DatasetError(
            f"Class list file {os.path.abspath(path)} (DATA.CLASS_LIST) lists no classes. "
            f"Write one class folder name (wnid) per line."
        )
    return sorted(set(names))


def _class_list_path(cfg) -> str | None:
    """DATA.CLASS_LIST if set, else the builtin CMC list for imagenet100, else None (all classes)."""
    if cfg.DATA.CLASS_LIST:
        if not DATASETS[cfg.DATA.NAME].class_folders:
            raise DatasetError(
                f"DATA.CLASS_LIST is set but DATA.NAME '{cfg.DATA.NAME}' is not a folder dataset; "
                f"a class list applies only to {', '.join(n for n, d in DATASETS.items() if d.class_folders)}. "
                f"Set DATA.CLASS_LIST '' or change DATA.NAME."
            )
        return cfg.DATA.CLASS_LIST
    return IMAGENET100_CLASS_FILE if cfg.DATA.NAME == "imagenet100" else None


def class_names(cfg) -> list[str] | None:
    """The class restriction of the configured dataset (sorted), or None when all classes are used."""
    path = _class_list_path(cfg)
    return read_class_list(path) if path else None


def num_classes(cfg) -> int:
    """Number of classes of the configured dataset (reads at most the class list file, never the data)."""
    _check_config(cfg)
    names = class_names(cfg)
    return len(names) if names is not None else DATASETS[cfg.DATA.NAME].num_classes


def _check_config(cfg) -> None:
    """Reject an unknown DATA.NAME, and a DATA.CLASS_LIST given for a dataset it cannot restrict."""
    if cfg.DATA.NAME not in DATASETS:
        raise DatasetError(
            f"Unknown dataset DATA.NAME '{cfg.DATA.NAME}'. Choose one of: {', '.join(DATASETS)}."
        )
    _class_list_path(cfg)


# =================================================================================================
# digits (scikit-learn, embedded)
# =================================================================================================
def _digit_to_pil(image: np.ndarray) -> Image.Image:
    """An 8x8 digit with values 0..16 -> a 32x32 RGB uint8 PIL image (bicubic upsampling)."""
    gray = np.clip(np.round(image * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    size = (DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE)
    return Image.fromarray(gray).resize(size, Image.Resampling.BICUBIC).convert("RGB")


def digits_split(split: str) -> tuple[list[Image.Image], list[int]]:
    """Images and labels of the fixed stratified digits split ("train": 1347, "test": 450)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
    digits = load_digits()
    train_idx, test_idx = train_test_split(
        np.arange(len(digits.target)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    indices = train_idx if split == "train" else test_idx
    return [_digit_to_pil(digits.images[i]) for i in indices], [
        int(digits.target[i]) for i in indices
    ]


class DigitsDataset(Dataset):
    """scikit-learn's handwritten digits as 32x32 RGB PIL images, held in memory."""

    def __init__(self, split: str = "train", transform: Callable | None = None):
        self.images, self.targets = digits_split(split)
        self.classes = [str(i) for i in range(10)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


# =================================================================================================
# torchvision datasets (CIFAR, STL-10)
# =================================================================================================
def _torchvision_dataset(cfg, split: str, transform: Callable | None) -> Dataset:
    """CIFAR-10/100 ("train"/"test") or STL-10 ("train+unlabeled"/"train"/"test") under DATA.ROOT."""
    name, root, download = cfg.DATA.NAME, cfg.DATA.ROOT, bool(cfg.DATA.DOWNLOAD)
    if not download:
        _require_dir(os.path.join(root, DATASETS[name].folder), name, root)
    try:
        if name == "stl10":  # STL-10 names its splits; CIFAR has train and test
            return tvd.STL10(root, split=split, transform=transform, download=download)
        cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
        return cls(root, train=(split == "train"), transform=transform, download=download)
    except DatasetError:
        raise
    except RuntimeError as err:  # torchvision: files missing or failing their checksum
        folder = os.path.join(os.path.abspath(root), DATASETS[name].folder)
        raise _missing_data_error(
            name,
            root,
            f"the files are incomplete or corrupted ({err}). Delete {folder} and fetch it again.",
        ) from None
    except OSError as err:  # includes urllib's URLError when the download fails
        raise _missing_data_error(
            name,
            root,
            f"could not be read or downloaded ({err}). Check the network or copy the data by hand.",
        ) from None


# =================================================================================================
# Folder datasets (Tiny ImageNet, ImageNet, ImageNet-100)
# =================================================================================================
def _folder_root(cfg) -> str:
    """Folder holding train/ and val/ for the configured folder dataset."""
    return os.path.join(cfg.DATA.ROOT, DATASETS[cfg.DATA.NAME].folder)


def _folder_split(
    cfg, split: str, transform: Callable | None, classes: Sequence[str] | None
) -> ClassListImageFolder:
    """train/ or val/ of a folder dataset as an ImageFolder restricted to ``classes`` (None = all)."""
    path = os.path.join(_folder_root(cfg), split)
    _require_dir(path, cfg.DATA.NAME, cfg.DATA.ROOT)
    if not any(entry.is_dir() for entry in os.scandir(path)):
        raise _missing_data_error(
            cfg.DATA.NAME,
            cfg.DATA.ROOT,
            f"folder {os.path.abspath(path)} holds no class "
            f"folders (one sub-folder of images per class is expected).",
        )
    source = _class_list_path(cfg) or f"{os.path.abspath(os.path.join(_folder_root(cfg), 'train'))}"
    return ClassListImageFolder(
        path,
        classes=classes,
        transform=transform,
        list_source=source,
        bad_images=check_bad_images_policy(cfg.DATA.BAD_IMAGES),
    )


def _read_tiny_annotations(path: str) -> list[tuple[str, str]]:
    """(file name, wnid) pairs of Tiny ImageNet's val_annotations.txt (tab-separated, box ignored)."""
    pairs = []
    with open(path, "r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise DatasetError(
                    f"{path}, line {number}: expected 'file<TAB>wnid<TAB>x y w h', got "
                    f"{line.strip()!r}. Restore val_annotations.txt from the official "
                    f"tiny-imagenet-200.zip."
                )
            pairs.append((fields[0], fields[1]))
    return pairs


def _tiny_flat_val(
    cfg, transform: Callable | None, classes: Sequence[str], restricted: bool
) -> LabeledFiles:
    """The official flat Tiny ImageNet val (val/images + val_annotations.txt), labelled like train.

    With ``restricted`` (a class list is in use) images of other classes are skipped; otherwise an
    unknown class is an error, since train and val must hold the same classes.
    """
    val_dir = os.path.join(_folder_root(cfg), "val")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    samples, unknown, absent = [], set(), []
    for file_name, wnid in _read_tiny_annotations(os.path.join(val_dir, "val_annotations.txt")):
        if wnid not in class_to_idx:
            unknown.add(wnid)
            continue
        path = os.path.join(val_dir, "images", file_name)
        if not os.path.isfile(path):
            absent.append(path)
        samples.append((path, class_to_idx[wnid]))
    if unknown and not restricted:
        raise _missing_data_error(
            "tiny_imagenet",
            cfg.DATA.ROOT,
            f"val_annotations.txt names {len(unknown)} classes "
            f"without a train/ folder (e.g. {min(unknown)}); train/ is incomplete.",
        )
    if absent:
        raise _missing_data_error(
            "tiny_imagenet",
            cfg.DATA.ROOT,
            f"{len(absent)} images listed in val_annotations.txt are missing (e.g. {absent[0]}).",
        )
    if not samples:
        raise _missing_data_error(
            "tiny_imagenet",
            cfg.DATA.ROOT,
            "val_annotations.txt lists no images of the selected classes.",
        )
    return LabeledFiles(
        samples, classes, transform, bad_images=check_bad_images_policy(cfg.DATA.BAD_IMAGES)
    )


def _tiny_val(cfg, transform: Callable | None, classes: Sequence[str], restricted: bool) -> Dataset:
    """Tiny ImageNet val: the official flat layout when val_annotations.txt exists, else class folders."""
    val_dir = os.path.join(_folder_root(cfg), "val")
    _require_dir(val_dir, "tiny_imagenet", cfg.DATA.ROOT)
    if os.path.isfile(os.path.join(val_dir, "val_annotations.txt")) and os.path.isdir(
        os.path.join(val_dir, "images")
    ):
        return _tiny_flat_val(cfg, transform, classes, restricted)
    return _folder_split(cfg, "val", transform, classes)


def _folder_eval_datasets(cfg, transform: Callable | None) -> tuple[Dataset, Dataset]:
    """train/ and val/ with the same classes and labels (val is checked to hold train's classes)."""
    restriction = class_names(cfg)
    memory = _folder_split(cfg, "train", transform, restriction)
    if cfg.DATA.NAME == "tiny_imagenet":
        return memory, _tiny_val(cfg, transform, memory.classes, restricted=restriction is not None)
    return memory, _folder_split(cfg, "val", transform, memory.classes)


# =================================================================================================
# Public API
# =================================================================================================
def _fashion_mnist(cfg, split: str, transform: Callable | None) -> Dataset:
    from pretrain.data.fashion_mnist import FashionMNIST

    return FashionMNIST(cfg.DATA.ROOT, split, transform)


# source (DatasetSpec.source) -> a builder of one split: builder(cfg, split name, transform)
_SPLIT_BUILDERS = {
    "embedded": lambda cfg, split, transform: DigitsDataset(split, transform),
    "idx": _fashion_mnist,
    "torchvision": _torchvision_dataset,
}


def build_pretrain_dataset(cfg, transform: Callable | None) -> Dataset:
    """The pretraining images of DATA.NAME; items are ``(transform(image), label)`` (label -1 if unlabeled)."""
    _check_config(cfg)
    spec = DATASETS[cfg.DATA.NAME]
    if spec.class_folders:
        return _folder_split(cfg, spec.splits[0], transform, class_names(cfg))
    return _SPLIT_BUILDERS[spec.source](cfg, spec.splits[0], transform)


def build_eval_datasets(cfg, transform: Callable | None) -> tuple[Dataset, Dataset]:
    """Labeled (memory/train, test) datasets for kNN and linear evaluation, sharing one label space."""
    _check_config(cfg)
    spec = DATASETS[cfg.DATA.NAME]
    if spec.class_folders:
        return _folder_eval_datasets(cfg, transform)
    build = _SPLIT_BUILDERS[spec.source]
    return build(cfg, spec.splits[1], transform), build(cfg, spec.splits[2], transform)
