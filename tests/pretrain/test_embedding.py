"""The embedding picture: a class-balanced sample, a 2-D projection, a PNG coloured by class."""

import sys

import matplotlib.image
import numpy as np
import pytest
from helpers import TINY_CPU_RUN, overrides

from pretrain.config import load_config
from pretrain.engine.checkpointer import latest_checkpoint
from pretrain.engine.trainer import Pretrainer
from pretrain.viz import embedding
from pretrain.viz.embedding import (
    EmbeddingError,
    balanced_sample,
    plot_embedding,
    project,
    sampled_test_features,
)


def test_the_sample_is_balanced_seeded_and_at_most_max_points():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 4)
    keep = balanced_sample(labels, 30, seed=1)
    assert len(keep) == 30 and len(set(keep)) == 30 and np.all(np.diff(keep) > 0)
    counts = np.bincount(labels[keep], minlength=3)
    assert counts[2] == 4 and counts[0] >= 10 and counts[1] >= 10  # 10 each, the small class all
    assert np.array_equal(keep, balanced_sample(labels, 30, seed=1))
    assert not np.array_equal(keep, balanced_sample(labels, 30, seed=2))
    assert np.array_equal(balanced_sample(labels, 1000), np.arange(84))  # fewer than asked: all
    with pytest.raises(EmbeddingError, match="at least 1"):
        balanced_sample(labels, 0)


def test_tsne_gives_two_coordinates_per_point_and_separates_clusters():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 0.1, (20, 8)), rng.normal(3, 0.1, (20, 8))])
    coords = project(features, "tsne")
    assert coords.shape == (40, 2)
    gap = np.linalg.norm(coords[:20].mean(0) - coords[20:].mean(0))
    assert gap > 3 * max(coords[:20].std(0).max(), coords[20:].std(0).max())


def test_umap_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now fails
    with pytest.raises(EmbeddingError, match="umap-learn.*--method tsne"):
        project(np.zeros((5, 3)), "umap")


def test_a_checkpoint_is_drawn_with_at_most_max_points(tmp_path, monkeypatch):
    cfg = load_config(
        "digits_demo.yaml",
        overrides(
            TINY_CPU_RUN,
            {"SOLVER.MAX_STEPS": 2, "KNN.PERIOD": 0, "OUTPUT_DIR": tmp_path / "run"},
        ),
    )
    Pretrainer(cfg).train()
    out = tmp_path / "pictures" / "embedding.png"
    drawn = plot_embedding(latest_checkpoint(cfg.OUTPUT_DIR), str(out), max_points=120)
    assert drawn == {"out": str(out), "points": 120, "classes": 10}
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 300  # a real picture, not an empty file
    with pytest.raises(EmbeddingError, match="Unknown --method 'pca'"):
        plot_embedding(latest_checkpoint(cfg.OUTPUT_DIR), str(out), method="pca")

    # the sampled images alone are encoded; without labels on the data set, all are and the same
    # sample is taken afterwards: the same images and features either way
    checkpoint = latest_checkpoint(cfg.OUTPUT_DIR)
    features, labels, classes, _ = sampled_test_features(checkpoint, 120)
    monkeypatch.setattr(embedding, "dataset_labels", lambda dataset: None)
    all_features, all_labels, _, _ = sampled_test_features(checkpoint, 120)
    assert features.shape == (120, all_features.shape[1]) and len(classes) == 10
    assert np.array_equal(labels, all_labels)
    assert np.allclose(features, all_features, atol=1e-5)
