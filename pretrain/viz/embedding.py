"""A 2-D picture of a checkpoint's test-split features, coloured by class (t-SNE or UMAP).

The features are those the kNN monitor uses (the encoder's pooled output, L2-normalised, on the eval
preprocessing). At most ``max_points`` test images are drawn, a seeded class-balanced sample, so a
picture of a large test split stays a matter of seconds to a minute on a CPU. t-SNE comes from
scikit-learn; UMAP needs the optional ``umap-learn`` package.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch.utils.data import Subset

from pretrain.config import config_from_yaml_text
from pretrain.data.augment import eval_transform
from pretrain.data.datasets import build_eval_datasets
from pretrain.data.loaders import make_loader
from pretrain.engine.checkpoint import load_checkpoint
from pretrain.engine.knn import extract_features, load_encoder
from pretrain.utils import distributed as comm
from pretrain.utils.errors import UserError
from pretrain.utils.paths import ensure_output_dir

METHODS = ("tsne", "umap")


class EmbeddingError(UserError, ValueError):
    """An embedding picture that cannot be drawn; the message says why and what to do."""


def balanced_sample(labels: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_points`` items, as equal a share per class as the classes allow, sorted."""
    if max_points < 1:
        raise EmbeddingError(f"--max-points must be at least 1, got {max_points}.")
    if len(labels) <= max_points:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    per_class = max_points // len(pools)
    chosen = [pool[:per_class] for pool in pools]
    rest = rng.permutation(np.concatenate([pool[per_class:] for pool in pools]))
    chosen.append(rest[: max_points - sum(len(c) for c in chosen)])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def project(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D coordinates of ``features`` (n x d) by t-SNE (scikit-learn) or UMAP (umap-learn)."""
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (len(features) - 1) / 3)))
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise EmbeddingError(
                "--method umap needs the optional package umap-learn: install it with "
                "'.venv/bin/pip install umap-learn' (or pip install -e '.[umap]'), or use --method tsne."
            ) from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(features)
    raise EmbeddingError(f"Unknown --method '{method}'; choose one of {', '.join(METHODS)}.")


def dataset_labels(dataset) -> Optional[np.ndarray]:
    """The labels a data set holds without reading its images (``targets`` / ``labels``), else None."""
    for name in ("targets", "labels"):
        values = getattr(dataset, name, None)
        if values is not None:
            return np.asarray(values)
    return None


def sampled_test_features(
    checkpoint_path: str, max_points: int, seed: int = 0, which: str = "online", opts=()
) -> Tuple[np.ndarray, np.ndarray, list, str]:
    """(features, labels, class names, data-set name) of a class-balanced sample of at most
    ``max_points`` test images, for a checkpoint's encoder.

    When the data set holds its labels, only the sampled images are encoded; otherwise all are, and
    the same sample is taken from their labels.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    cfg = config_from_yaml_text(checkpoint["config"], opts)
    device = comm.resolve_device(cfg.DEVICE)
    encoder = load_encoder(checkpoint, cfg, which).to(device)
    _, test = build_eval_datasets(cfg, eval_transform(cfg))
    classes = getattr(test, "classes", None)
    labels = dataset_labels(test)
    keep = balanced_sample(labels, max_points, seed) if labels is not None else None
    images = Subset(test, keep.tolist()) if keep is not None else test
    loader = make_loader(images, cfg.KNN.BATCH_SIZE, cfg.DATA.NUM_WORKERS, device)
    features, labels = (t.numpy() for t in extract_features(encoder, loader, device))
    if keep is None:
        keep = balanced_sample(labels, max_points, seed)
        features, labels = features[keep], labels[keep]
    classes = list(classes or range(int(labels.max()) + 1))
    return features, labels, classes, cfg.DATA.NAME


def draw_embedding(
    coords: np.ndarray, labels: np.ndarray, classes: list, title: str, out_path: str
) -> str:
    """Scatter ``coords`` coloured by class, with a legend of the class names; returns ``out_path``."""
    ensure_output_dir(os.path.dirname(out_path) or ".", f"the folder of '{out_path}'")
    figure = Figure(figsize=(7.5, 6.5), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    colors = matplotlib.colormaps["tab20" if len(classes) > 10 else "tab10"]
    for index in np.unique(labels):
        mask = labels == index
        name = classes[index] if index < len(classes) else index
        ax.scatter(*coords[mask].T, s=6, color=colors(index % colors.N), label=str(name))
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 20:
        ax.legend(
            markerscale=2.5, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False
        )
    figure.tight_layout()
    figure.savefig(out_path)
    return out_path


def plot_embedding(
    checkpoint_path: str,
    out_path: str,
    method: str = "tsne",
    max_points: int = 2000,
    which: str = "online",
    seed: int = 0,
    opts=(),
) -> dict:
    """Draw the test split's features of a checkpoint in 2-D; returns what was drawn."""
    if method not in METHODS:
        raise EmbeddingError(f"Unknown --method '{method}'; choose one of {', '.join(METHODS)}.")
    features, labels, classes, data = sampled_test_features(
        checkpoint_path, max_points, seed, which, opts
    )
    coords = project(features, method, seed)
    title = (
        f"{method.upper() if method == 'umap' else 't-SNE'} of {len(labels)} {data} test images "
        f"({which} encoder of {os.path.basename(checkpoint_path)})"
    )
    draw_embedding(coords, labels, classes, title, out_path)
    return {"out": out_path, "points": int(len(labels)), "classes": len(np.unique(labels))}
