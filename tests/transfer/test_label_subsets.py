"""Labelled subsets for semi-supervised fine-tuning: class-balanced fractions and split files."""

import numpy as np
import pytest

from transfer.label_subsets import (
    LabelSubsetError,
    balanced_subset,
    indices_of_names,
    read_label_file,
)


def test_a_fraction_keeps_that_share_of_every_class_seeded():
    labels = np.array([0] * 100 + [1] * 50 + [2] * 3)
    keep = balanced_subset(labels, 0.1, seed=0)
    assert np.bincount(labels[keep]).tolist() == [10, 5, 1]  # round(0.3) = 0 -> at least one
    assert np.all(np.diff(keep) > 0)
    assert np.array_equal(keep, balanced_subset(labels, 0.1, seed=0))
    assert not np.array_equal(keep, balanced_subset(labels, 0.1, seed=1))
    assert np.array_equal(balanced_subset(labels, 1.0), np.arange(153))


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(LabelSubsetError, match="--label-fraction must be in"):
        balanced_subset([0, 1], fraction)


def test_unlabelled_images_are_refused():
    with pytest.raises(LabelSubsetError, match="unlabelled"):
        balanced_subset([0, -1, 1], 0.5)


def test_split_files_in_the_imagenet_format_select_those_images(tmp_path):
    path = tmp_path / "1percent.txt"
    path.write_text("n01440764_10026.JPEG\n\n# a comment\nn01443537_2.JPEG\n")
    names = read_label_file(str(path))
    assert names == ["n01440764_10026.JPEG", "n01443537_2.JPEG"]
    paths = [
        "/data/train/n01443537/n01443537_2.JPEG",
        "/data/train/n01440764/n01440764_1.JPEG",
        "/data/train/n01440764/n01440764_10026.JPEG",
    ]
    assert indices_of_names(paths, names, str(path)).tolist() == [0, 2]
    with pytest.raises(
        LabelSubsetError, match="1 of the 2 images .* are not in the training split"
    ):
        indices_of_names(paths[:2], names, str(path))


def test_a_missing_or_empty_label_file_is_explained(tmp_path):
    with pytest.raises(LabelSubsetError, match="does not exist.*one image file name per line"):
        read_label_file(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(LabelSubsetError, match="lists no image names"):
        read_label_file(str(tmp_path / "empty.txt"))
