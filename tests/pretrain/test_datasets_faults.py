"""Faulty data in folder datasets: unusual image modes, unreadable files (DATA.BAD_IMAGES skip/fail),
empty class folders and a data set smaller than one batch. Tiny 40x40 images keep the file fast."""

import io
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

from pretrain.config import get_default_config, load_config
from pretrain.data.datasets import (
    MAX_CONSECUTIVE_BAD_IMAGES,
    BadImageError,
    DatasetError,
    bad_image_count,
    bad_image_report,
    build_eval_datasets,
    build_pretrain_dataset,
    load_rgb_image,
)
from pretrain.data.sampling import SeededTransformDataset

SIZE = (40, 40)
LEFT, RIGHT = (5, 20), (35, 20)  # a pixel in each half of the test images
WHITE, BLACK, RED = (255, 255, 255), (0, 0, 0), (255, 0, 0)


# -- helpers -----------------------------------------------------------------------------------------
def _cfg(root, **data):
    """An imagenet config over the fake tree at ``root``, with DATA overrides."""
    cfg = get_default_config()
    cfg.DATA.NAME = "imagenet"
    cfg.DATA.ROOT = str(root)
    for key, value in data.items():
        cfg.DATA[key] = value
    return cfg


def _halves(mode, left, right, palette=None, **info):
    """A 40x40 image of ``mode`` whose left half holds ``left`` and right half ``right``."""
    image = Image.new(mode, SIZE, left)
    image.paste(right, (SIZE[0] // 2, 0, SIZE[0], SIZE[1]))
    if palette is not None:
        image.putpalette(palette)
    image.info.update(info)
    return image


def _good_image(path, seed=0):
    """A small RGB PNG of random pixels."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(
        0, 256, size=(SIZE[1], SIZE[0], 3), dtype=np.uint8
    )
    Image.fromarray(pixels).save(path, "PNG")


def _jpeg_cut_in_half():
    """A valid JPEG of random pixels, truncated to half its length (as after an interrupted copy)."""
    pixels = np.random.default_rng(1).integers(0, 256, size=(SIZE[1], SIZE[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


BAD_FILES = {  # name -> file contents that PIL cannot decode
    "empty": b"",
    "random_bytes": np.random.default_rng(2).bytes(600),
    "jpeg_cut_in_half": _jpeg_cut_in_half(),
}


def _tree_with_bad_file(root, contents):
    """root/{train,val}/n01/ with img_0.png (good), img_1.JPEG (bad: ``contents``), img_2.png (good)."""
    for split in ("train", "val"):
        folder = os.path.join(root, split, "n01")
        _good_image(os.path.join(folder, "img_0.png"), seed=0)
        with open(os.path.join(folder, "img_1.JPEG"), "wb") as handle:
            handle.write(contents)
        _good_image(os.path.join(folder, "img_2.png"), seed=2)
    return os.path.join(root, "train", "n01", "img_1.JPEG")


@pytest.fixture
def pretrain_warnings():
    """The warning messages logged to the "pretrain" logger during a test.

    A handler on that logger itself: the engine's setup_logging turns its propagation to the root off.
    """
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    log = logging.getLogger("pretrain")
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)


# -- image modes -------------------------------------------------------------------------------------
PALETTE = [255, 0, 0, 0, 0, 255, 0, 255, 0]  # index 0 red, 1 blue, 2 green
MODE_CASES = [  # id, image factory, file format, {pixel: expected RGB}
    ("rgb", lambda: _halves("RGB", RED, (0, 0, 255)), "PNG", {LEFT: RED, RIGHT: (0, 0, 255)}),
    (
        "cmyk_jpeg",
        lambda: _halves("CMYK", (0, 0, 0, 0), (0, 0, 0, 255)),
        "JPEG",
        {LEFT: WHITE, RIGHT: BLACK},
    ),
    ("gray_L", lambda: _halves("L", 128, 0), "PNG", {LEFT: (128,) * 3, RIGHT: BLACK}),
    ("bilevel_1", lambda: _halves("1", 1, 0), "PNG", {LEFT: WHITE, RIGHT: BLACK}),
    (
        "gray_16bit",
        lambda: _halves("I;16", 65535, 128 * 257),
        "PNG",
        {LEFT: WHITE, RIGHT: (128,) * 3},
    ),
    ("gray_int32", lambda: _halves("I", 65535, 257 * 64), "TIFF", {LEFT: WHITE, RIGHT: (64,) * 3}),
    ("gray_float_0_1", lambda: _halves("F", 1.0, 0.5), "TIFF", {LEFT: WHITE, RIGHT: (128,) * 3}),
    (
        "gray_float_0_255",
        lambda: _halves("F", 200.0, 20.0),
        "TIFF",
        {LEFT: (200,) * 3, RIGHT: (20,) * 3},
    ),
    ("palette", lambda: _halves("P", 0, 1, PALETTE), "PNG", {LEFT: RED, RIGHT: (0, 0, 255)}),
    (
        "palette_transparent_index",
        lambda: _halves("P", 0, 1, PALETTE, transparency=0),
        "GIF",
        {LEFT: WHITE, RIGHT: (0, 0, 255)},
    ),
    (
        "palette_alpha_bytes",
        lambda: _halves("P", 0, 1, PALETTE, transparency=bytes([0, 255, 128])),
        "PNG",
        {LEFT: WHITE, RIGHT: (0, 0, 255)},
    ),
    (
        "rgba",
        lambda: _halves("RGBA", (0, 0, 0, 0), (255, 0, 0, 255)),
        "PNG",
        {LEFT: WHITE, RIGHT: RED},
    ),
    (
        "rgba_half_alpha",
        lambda: _halves("RGBA", (255, 0, 0, 128), (0, 0, 0, 255)),
        "PNG",
        {LEFT: (255, 127, 127), RIGHT: BLACK},
    ),
    (
        "gray_alpha_LA",
        lambda: _halves("LA", (0, 0), (50, 255)),
        "PNG",
        {LEFT: WHITE, RIGHT: (50,) * 3},
    ),
]


@pytest.mark.filterwarnings(
    "error"
)  # e.g. PIL's "Palette images with Transparency ... converted to RGBA"
@pytest.mark.parametrize(
    "make, file_format, expected",
    [case[1:] for case in MODE_CASES],
    ids=[case[0] for case in MODE_CASES],
)
def test_image_modes_convert_to_rgb(tmp_path, make, file_format, expected):
    """Every mode met in ImageNet-like trees gives 8-bit RGB of the right size and the expected colours;
    transparency is composited onto white, 16-bit gray is scaled (65535 -> 255), not clipped."""
    path = str(tmp_path / f"image.{file_format.lower()}")
    make().save(path, file_format)
    image = load_rgb_image(path)
    assert image.mode == "RGB" and image.size == SIZE
    for pixel, colour in expected.items():
        assert np.abs(np.subtract(image.getpixel(pixel), colour)).max() <= 3, (
            pixel,
            image.getpixel(pixel),
        )


def test_folder_datasets_read_through_load_rgb_image(tmp_path):
    """A 16-bit gray file inside a class folder is scaled like load_rgb_image scales it (one loader for all)."""
    folder = tmp_path / "train" / "n01"
    folder.mkdir(parents=True)
    _halves("I;16", 65535, 0).save(str(folder / "img.png"))
    image, _ = build_pretrain_dataset(_cfg(tmp_path), None)[0]
    assert image.getpixel(LEFT) == WHITE and image.getpixel(RIGHT) == BLACK


# -- unreadable files --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_is_skipped_warned_and_counted(tmp_path, pretrain_warnings, kind):
    """DATA.BAD_IMAGES skip: the next image comes back instead, a warning names the file (once per process),
    and the counter and bad_image_report see it through Subset and SeededTransformDataset wrappers."""
    bad_path = _tree_with_bad_file(str(tmp_path), BAD_FILES[kind])
    dataset = build_pretrain_dataset(_cfg(tmp_path, BAD_IMAGES="skip"), None)
    assert bad_image_report(dataset) is None
    image, label = dataset[1]
    assert (
        np.array_equal(np.asarray(image), np.asarray(load_rgb_image(dataset.samples[2][0])))
        and label == 0
    )
    dataset[1]  # met again (next epoch): counted and warned only once
    assert bad_image_count(dataset) == 1
    wrapped = SeededTransformDataset(Subset(dataset, [0, 1]))
    assert bad_image_report(wrapped) == (
        "1 unreadable image(s) were skipped (DATA.BAD_IMAGES skip); "
        "see the warnings above for their paths"
    )
    messages = [record.getMessage() for record in pretrain_warnings]
    assert len(messages) == 1 and bad_path in messages[0] and "DATA.BAD_IMAGES skip" in messages[0]


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_fails_with_path_reason_and_fix(tmp_path, kind):
    """DATA.BAD_IMAGES fail: a DatasetError naming the file, PIL's error and both fixes."""
    bad_path = _tree_with_bad_file(str(tmp_path), BAD_FILES[kind])
    dataset = build_pretrain_dataset(_cfg(tmp_path, BAD_IMAGES="fail"), None)
    with pytest.raises(BadImageError) as info:
        dataset[1]
    message = str(info.value)
    assert isinstance(info.value, DatasetError)
    assert (
        bad_path in message
        and "Remove it or replace it" in message
        and "DATA.BAD_IMAGES skip" in message
    )
    assert ("empty (0 bytes)" if kind == "empty" else "Error:") in message
    assert bad_image_report(dataset) is None


def test_eval_datasets_follow_the_policy(tmp_path):
    """build_eval_datasets passes DATA.BAD_IMAGES on to both splits."""
    _tree_with_bad_file(str(tmp_path), b"")
    for policy in ("skip", "fail"):
        for dataset in build_eval_datasets(_cfg(tmp_path, BAD_IMAGES=policy), None):
            assert dataset.bad_images == policy


def _to_tensor(image):
    """Top-level (picklable) transform for the loader test."""
    return transforms.functional.pil_to_tensor(image)


def test_skip_counter_is_shared_by_loader_workers(tmp_path):
    """Files skipped inside two DataLoader worker processes are counted in the main process; batches stay full."""
    folder = tmp_path / "train" / "n01"
    for i in range(8):
        _good_image(str(folder / f"img_{i}.png"), seed=i)
    for name in ("img_1.png", "img_4.png", "img_6.png"):
        (folder / name).write_bytes(b"")
    dataset = build_pretrain_dataset(_cfg(tmp_path), _to_tensor)
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    sizes = [len(labels) for _, labels in loader]
    assert sizes == [2, 2, 2, 2]
    assert bad_image_count(loader) == 3
    assert bad_image_report(dataset).startswith("3 unreadable image(s) were skipped")


def test_too_many_consecutive_bad_files(tmp_path):
    """A run of MAX_CONSECUTIVE_BAD_IMAGES unreadable files stops the run, since the data is likely damaged."""
    folder = tmp_path / "train" / "n01"
    folder.mkdir(parents=True)
    for i in range(MAX_CONSECUTIVE_BAD_IMAGES):
        (folder / f"bad_{i:02d}.JPEG").write_bytes(b"")
    _good_image(str(folder / "good.png"))
    dataset = build_pretrain_dataset(_cfg(tmp_path), None)
    with pytest.raises(DatasetError, match=f"{MAX_CONSECUTIVE_BAD_IMAGES} consecutive image files"):
        dataset[0]
    assert dataset[1][0].size == SIZE  # wraps around to good.png within the limit


# -- folder layout -----------------------------------------------------------------------------------
def test_empty_class_folder_is_named(tmp_path):
    """A class folder without image files (torchvision's FileNotFoundError) becomes a DatasetError naming it."""
    _good_image(str(tmp_path / "train" / "n01" / "img_0.png"))
    (tmp_path / "train" / "n02").mkdir()
    (tmp_path / "train" / "n03").mkdir()
    (tmp_path / "train" / "n03" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError) as info:
        build_pretrain_dataset(_cfg(tmp_path), None)
    message = str(info.value)
    assert str(tmp_path / "train" / "n02") in message and str(tmp_path / "train" / "n03") in message
    assert "n01" not in message and "Add images" in message and "DATA.CLASS_LIST" in message


def test_split_without_class_folders_shows_layout(tmp_path):
    """train/ holding loose images but no class folders: the error shows the expected layout."""
    _good_image(str(tmp_path / "train" / "img_0.png"))
    with pytest.raises(DatasetError, match="holds no class folders(.|\n)*Expected layout"):
        build_pretrain_dataset(_cfg(tmp_path), None)


@pytest.fixture
def restore_pretrain_logger():
    """Undo the engine's logging setup (handlers, propagation) after a test that builds a Pretrainer."""
    log = logging.getLogger("pretrain")
    saved = (list(log.handlers), log.propagate, log.level)
    yield
    for handler in list(log.handlers):
        if handler not in saved[0]:
            log.removeHandler(handler)
            handler.close()
    log.propagate, log.level = saved[1], saved[2]


def test_data_set_smaller_than_one_batch(tmp_path, restore_pretrain_logger):
    """The engine refuses a training set with fewer images than SOLVER.BATCH_SIZE, saying how to fix it."""
    from pretrain.engine.trainer import Pretrainer

    for i in range(3):
        _good_image(str(tmp_path / "data" / "train" / "n01" / f"img_{i}.png"), seed=i)
    cfg = load_config(
        None,
        [
            "DATA.NAME",
            "imagenet",
            "DATA.ROOT",
            str(tmp_path / "data"),
            "DATA.NUM_WORKERS",
            "0",
            "SOLVER.BATCH_SIZE",
            "8",
            "DEVICE",
            "cpu",
            "OUTPUT_DIR",
            str(tmp_path / "run"),
        ],
    )
    threads = torch.get_num_threads()
    try:
        with pytest.raises(DatasetError, match="3 images, fewer than one batch"):
            Pretrainer(cfg)
    finally:
        torch.set_num_threads(threads)
