"""The reference rows: raw pixels (kNN, logistic regression) and the network at initialisation."""

from __future__ import annotations

import os
import time
import warnings
from typing import List, Optional, Tuple

from pretrain import (
    latest_checkpoint,
    load_config,
)

from .plan import (
    NO_RAW_PIXEL_REFERENCE,
    QUIET,
    RAW_LINEAR_MAX_ITER,
    REFERENCES_DIR,
    Plan,
)
from .stages import (
    RunPaths,
    execute_run,
    folder_lock,
    read_json,
    release_gpu_memory,
    write_json,
)


# =================================================================================================
# Reference rows: raw pixels, the network at initialisation
# =================================================================================================
def _stack_loader(loader) -> Tuple["object", "object"]:
    """(flattened images as a float numpy array, labels) of every batch of ``loader``."""
    import torch

    images, labels = [], []
    for batch, targets in loader:
        images.append(batch.flatten(1).float())
        labels.append(torch.as_tensor(targets))
    return torch.cat(images).numpy(), torch.cat(labels).numpy()


def raw_pixel_linear(memory_loader, query_loader) -> dict:
    """Test top-1 of a scikit-learn logistic regression on the standardised flattened pixels."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_test, y_test) = _stack_loader(memory_loader), _stack_loader(query_loader)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=RAW_LINEAR_MAX_ITER))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    iterations = int(max(model[-1].n_iter_))
    return {
        "linear_top1": 100.0 * float(model.score(x_test, y_test)),
        "linear_iterations": iterations,
        "linear_converged": iterations < RAW_LINEAR_MAX_ITER,
    }


def raw_pixel_reference(plan: Plan) -> dict:
    """kNN (config's k, T, cosine) and logistic regression on the flattened normalised eval-transform images."""
    from torch import nn

    from pretrain import build_eval_loaders, knn_of_config
    from pretrain import distributed as comm

    cfg = plan.base_config()
    base = {
        "name": "raw_pixels",
        "label": f"raw pixels ({cfg.DATA.IMAGE_SIZE}x{cfg.DATA.IMAGE_SIZE}, normalised)",
    }
    if cfg.DATA.NAME in NO_RAW_PIXEL_REFERENCE:
        return {
            **base,
            "skipped": f"raw pixels of {cfg.DATA.NAME} are too large for an in-memory reference",
        }
    tic = time.perf_counter()
    device = comm.resolve_device(cfg.DEVICE)
    memory_loader, query_loader = build_eval_loaders(cfg, device)
    knn = knn_of_config(nn.Flatten(), cfg, device, (memory_loader, query_loader))
    linear = raw_pixel_linear(memory_loader, query_loader)
    return {
        **base,
        "knn_top1": knn,
        **linear,
        "linear_method": f"scikit-learn LogisticRegression (lbfgs, C=1, max_iter {RAW_LINEAR_MAX_ITER}) on "
        f"standardised pixels",
        "knn_settings": {"k": cfg.KNN.K, "temperature": cfg.KNN.TEMPERATURE},
        "wall_time_s": time.perf_counter() - tic,
    }


def init_reference(plan: Plan) -> dict:
    """The network at initialisation (seed 0): a step-0 checkpoint, then kNN and the linear protocol."""
    folder = os.path.join(plan.root, REFERENCES_DIR, "init")
    paths = RunPaths(folder, os.path.join(plan.root, REFERENCES_DIR, "init.json"))

    def make_checkpoint(_lock_fd: Optional[int]) -> str:
        existing = latest_checkpoint(paths.pretrain)
        if existing:
            return existing
        from pretrain import Pretrainer

        print(f"  step-0 checkpoint of the untrained network in {paths.pretrain}", flush=True)
        cfg = load_config(plan.cfg, ["SEED", "0", *QUIET, *plan.opts, "OUTPUT_DIR", paths.pretrain])
        path = Pretrainer(cfg).save()
        release_gpu_memory()
        return path

    result = execute_run(plan, paths, 0, make_checkpoint, {"name": "init"})
    return {**result, "name": "init", "label": "same network at initialisation (seed 0)"}


def compute_references(plan: Plan) -> List[dict]:
    """Both reference rows, each computed once per runner root and cached in <root>/references/."""
    print(f"== references -> {os.path.join(plan.root, REFERENCES_DIR)}", flush=True)
    raw_path = os.path.join(plan.root, REFERENCES_DIR, "raw_pixels.json")
    raw = read_json(raw_path)
    if raw is None:
        with folder_lock(os.path.dirname(raw_path)):
            raw = read_json(raw_path) or raw_pixel_reference(plan)
            write_json(raw, raw_path)
    return [raw, init_reference(plan)]


def references_cached(plan: Plan) -> bool:
    """Whether both reference rows of the root are finished."""
    return all(
        os.path.isfile(os.path.join(plan.root, REFERENCES_DIR, f"{n}.json"))
        for n in ("raw_pixels", "init")
    )


def read_references(plan: Plan) -> List[dict]:
    """The cached reference rows; a missing one is {"name", "pending": True}."""
    out = []
    for name, label in (
        ("raw_pixels", "raw pixels"),
        ("init", "same network at initialisation (seed 0)"),
    ):
        data = read_json(os.path.join(plan.root, REFERENCES_DIR, f"{name}.json"))
        if data is not None and name == "init":
            data = {**data, "label": label}
        out.append(data if data is not None else {"name": name, "label": label, "pending": True})
    return out
