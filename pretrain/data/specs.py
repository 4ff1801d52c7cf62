"""The data-set registry: one :class:`DatasetSpec` per ``DATA.NAME``.

Everything the rest of the code needs to know about a data set without reading it lives here:
its classes, its pretraining size (for ``--dry-run``), how it is read (the ``source`` that picks
the builder in ``pretrain/data/datasets.py``), its splits, and for the user-facing errors the
folder tree expected under DATA.ROOT and how to get the data. ``CHOICES["DATA.NAME"]`` in
``pretrain/config.py`` is ``tuple(DATASETS)``. This module imports nothing of the project, so the
config can read it.

To add a data set: one entry in :data:`DATASETS` (with a builder for its ``source`` if it is a new
kind), its mean/std in a config under ``configs/pretrain/``, and a test on a tiny fake copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

TINY_DIR = "tiny-imagenet-200"
SOURCES = ("embedded", "idx", "torchvision", "folder")
_IMAGENET_LAYOUT = (
    "train/\n  n01440764/\n    n01440764_10026.JPEG ...\n  ... (one folder per class)\n"
    "val/\n  n01440764/\n    ILSVRC2012_val_00000293.JPEG ...\n  ... (one folder per class)"
)


def _torchvision_download(archive: str, url: str, size: str) -> str:
    return (
        f"set DATA.DOWNLOAD True to let torchvision download it (about {size}, needs internet), "
        f"or unpack {archive} from {url} into DATA.ROOT"
    )


@dataclass(frozen=True)
class DatasetSpec:
    """What the code knows about one data set before reading any of it."""

    name: str  # the DATA.NAME value
    num_classes: int  # classes of the full data set (DATA.CLASS_LIST may restrict folder data sets)
    train_size: int  # pretraining images, shown by --dry-run
    source: str  # how it is read (SOURCES): embedded in a library, IDX files, torchvision, image folders
    splits: Tuple[
        str, str, str
    ]  # (pretraining, kNN memory / linear train, test) split names of the source
    folder: str = ""  # the folder under DATA.ROOT that holds it ("" = DATA.ROOT itself)
    layout: str = ""  # the tree expected under DATA.ROOT, two spaces per level (for error messages)
    how_to_get: str = ""  # how to get the data (for error messages)

    @property
    def class_folders(self) -> bool:
        """Read from one folder of images per class (DATA.CLASS_LIST can restrict it)."""
        return self.source == "folder"


DATASETS: Dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("digits", 10, 1347, "embedded", ("train", "train", "test")),
        DatasetSpec(
            "fashion_mnist", 10, 60000, "idx", ("train", "train", "test"), folder="fashion-mnist"
        ),
        DatasetSpec(
            "cifar10",
            10,
            50000,
            "torchvision",
            ("train", "train", "test"),
            folder="cifar-10-batches-py",
            layout="cifar-10-batches-py/\n  batches.meta\n  data_batch_1 ... data_batch_5\n  test_batch",
            how_to_get=_torchvision_download(
                "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar.html", "170 MB"
            ),
        ),
        DatasetSpec(
            "cifar100",
            100,
            50000,
            "torchvision",
            ("train", "train", "test"),
            folder="cifar-100-python",
            layout="cifar-100-python/\n  meta\n  train\n  test",
            how_to_get=_torchvision_download(
                "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar.html", "170 MB"
            ),
        ),
        DatasetSpec(
            "stl10",
            10,
            105000,
            "torchvision",
            ("train+unlabeled", "train", "test"),
            folder="stl10_binary",
            layout=(
                "stl10_binary/\n  class_names.txt\n  fold_indices.txt\n  train_X.bin  train_y.bin\n"
                "  test_X.bin   test_y.bin\n  unlabeled_X.bin"
            ),
            how_to_get=_torchvision_download(
                "stl10_binary.tar.gz", "https://cs.stanford.edu/~acoates/stl10/", "2.6 GB"
            ),
        ),
        DatasetSpec(
            "tiny_imagenet",
            200,
            100000,
            "folder",
            ("train", "train", "val"),
            folder=TINY_DIR,
            layout=(
                f"{TINY_DIR}/\n  wnids.txt\n  train/\n    n01443537/\n      images/\n"
                "        n01443537_0.JPEG ...\n    ... (200 class folders)\n  val/\n"
                "    val_annotations.txt   (file<TAB>wnid<TAB>box, as in the official zip)\n"
                "    images/\n      val_0.JPEG ...\n"
                "    (or, if reorganised: val/<wnid>/*.JPEG class folders)"
            ),
            how_to_get=(
                "download the official archive http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip "
                "it into DATA.ROOT (torchvision cannot download it)"
            ),
        ),
        DatasetSpec(
            "imagenet100",
            100,
            126689,
            "folder",
            ("train", "train", "val"),
            layout=_IMAGENET_LAYOUT,
            how_to_get=(
                "ImageNet-100 is read from an ImageNet-1K tree (from https://image-net.org, laid out as "
                "shown); a full tree works, as does a copy holding only the 100 CMC class folders listed in "
                "pretrain/data/resources/imagenet100_classes.txt (or in DATA.CLASS_LIST)"
            ),
        ),
        DatasetSpec(
            "imagenet",
            1000,
            1281167,
            "folder",
            ("train", "train", "val"),
            layout=_IMAGENET_LAYOUT,
            how_to_get=(
                "ImageNet-1K (ILSVRC2012) is distributed only after registering at https://image-net.org; "
                "extract ILSVRC2012_img_train.tar (and each class tar inside it) into train/, and sort the "
                "validation images into class folders under val/ (e.g. with the widely used valprep.sh)"
            ),
        ),
    )
}
# Number of pretraining images per data set, for --dry-run (no data is read).
KNOWN_TRAIN_SIZES = {name: spec.train_size for name, spec in DATASETS.items()}
