"""All linear-evaluation settings, each defined once with its default and a one-line comment.

The data set, image size, mean/std and backbone are NOT set here: they come from the pretraining
config saved in the checkpoint. Protocol files under ``configs/lincls/`` override these defaults
(yacs style, with ``_BASE_`` inheritance); command-line ``KEY VALUE`` pairs override the files.
The loading machinery (YAML chain, overrides, unknown-key hints) is pretrain.load_config_tree.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

from yacs.config import CfgNode as CN

from pretrain import check_choices, load_config_tree, raise_first_failed

CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "lincls"
)
DEFINED_IN = "transfer/lincls_config.py"

_C = CN()

_C.LINCLS = CN()
# Training length in epochs.
_C.LINCLS.EPOCHS = 100
# Mini-batch size of the linear classifier's training.
_C.LINCLS.BATCH_SIZE = 256
# SGD learning rate (used as is, no batch-size scaling; MoCo v2 protocol 30, Mean Shift 0.01).
_C.LINCLS.LR = 30.0
# SGD momentum.
_C.LINCLS.MOMENTUM = 0.9
# Nesterov momentum in SGD (the official MSR eval_single.py uses it; MoCo v2 does not). Needs MOMENTUM > 0.
_C.LINCLS.NESTEROV = False
# Weight decay of the linear layer (MoCo v2 0, Mean Shift 1e-4).
_C.LINCLS.WEIGHT_DECAY = 0.0
# Epochs at which the learning rate is multiplied by LINCLS.GAMMA (step schedule).
_C.LINCLS.MILESTONES = [60, 80]
# Factor applied to the learning rate at each milestone.
_C.LINCLS.GAMMA = 0.1
# Feature normalisation before the linear layer: "none" or "l2_standardize" (L2, then per-dim mean/std of train).
_C.LINCLS.FEATURE_NORM = "none"
# Extract features once (eval transform, no augmentation) and train on the cached tensors; fast, drops train aug.
_C.LINCLS.CACHED_FEATURES = False
# Encoder BatchNorm while the classifier trains: "eval" (fixed stats, MoCo v2) or "train" (stats move, eval_single.py).
_C.LINCLS.ENCODER_BN = "eval"
# Drop each epoch's last, incomplete training batch (eval_single.py does).
_C.LINCLS.DROP_LAST = False
# Train augmentation: "auto" (pad_crop under 64 px, else random_resized_crop), random_resized_crop, pad_crop, none.
_C.LINCLS.TRAIN_AUG = "auto"
# Scale range of the random_resized_crop training augmentation (torchvision / MoCo default 0.08-1).
_C.LINCLS.CROP_SCALE = [0.08, 1.0]
# Zero padding in pixels of the pad_crop training augmentation (random crop of the padded image).
_C.LINCLS.CROP_PADDING = 4
# Probability of the horizontal flip of the training augmentation.
_C.LINCLS.FLIP_PROB = 0.5
# Test transform: True = resize + centre crop (pretraining eval transform), False = CenterCrop only (eval_single.py).
_C.LINCLS.TEST_RESIZE = True
# Batch size of feature extraction (test features, cached features, standardisation statistics).
_C.LINCLS.FEATURE_BATCH_SIZE = 256
# Mixed precision of the frozen encoder's forward: "none", "fp16" or "bf16" (the classifier stays fp32).
_C.LINCLS.AMP = "none"

_C.DATA = CN()
# Folder holding the data set ("" = DATA.ROOT of the pretraining config saved in the checkpoint).
_C.DATA.ROOT = ""
# Loader worker processes (-1 = DATA.NUM_WORKERS of the pretraining config saved in the checkpoint).
_C.DATA.NUM_WORKERS = -1

# Folder for config.yaml, log.txt, metrics.jsonl, lincls_checkpoint.pth ("" = <checkpoint dir>/lincls_<cfg>_<step>).
_C.OUTPUT_DIR = ""
# Random seed (classifier initialisation, shuffling, augmentation).
_C.SEED = 0
# "auto" (cuda when available), "cpu" or "cuda".
_C.DEVICE = "auto"
# Show tqdm progress bars when stderr is a terminal; otherwise only the log line of each epoch.
_C.PROGRESS_BAR = True

CHOICES = {
    "LINCLS.FEATURE_NORM": ("none", "l2_standardize"),
    "LINCLS.TRAIN_AUG": ("auto", "random_resized_crop", "pad_crop", "none"),
    "LINCLS.ENCODER_BN": ("eval", "train"),
    "LINCLS.AMP": ("none", "fp16", "bf16"),
    "DEVICE": ("auto", "cpu", "cuda"),
}


def get_default_config() -> CN:
    """A fresh, mutable copy of the linear-evaluation defaults."""
    return _C.clone()


def load_lincls_config(cfg_file: Optional[str] = None, opts: Iterable[str] = ()) -> CN:
    """Defaults, then the protocol file (bare names are looked up in configs/lincls/), then overrides; frozen."""
    return load_config_tree(_C, cfg_file, opts, CONFIG_DIR, DEFINED_IN, validate)


def validate(cfg: CN) -> None:
    """Reject values that are out of range or not among the documented choices."""
    check_choices(cfg, CHOICES)
    lin = cfg.LINCLS
    milestones = list(lin.MILESTONES)
    checks = [
        (lin.EPOCHS > 0, f"LINCLS.EPOCHS must be > 0, got {lin.EPOCHS}"),
        (lin.BATCH_SIZE > 0, f"LINCLS.BATCH_SIZE must be > 0, got {lin.BATCH_SIZE}"),
        (
            lin.FEATURE_BATCH_SIZE > 0,
            f"LINCLS.FEATURE_BATCH_SIZE must be > 0, got {lin.FEATURE_BATCH_SIZE}",
        ),
        (lin.LR > 0, f"LINCLS.LR must be > 0, got {lin.LR}"),
        (lin.MOMENTUM >= 0, f"LINCLS.MOMENTUM must be >= 0, got {lin.MOMENTUM}"),
        (
            lin.MOMENTUM > 0 or not lin.NESTEROV,
            f"LINCLS.NESTEROV True needs LINCLS.MOMENTUM > 0 (SGD's Nesterov "
            f"momentum), got {lin.MOMENTUM}; set a momentum or NESTEROV False",
        ),
        (
            lin.ENCODER_BN == "eval" or not lin.CACHED_FEATURES,
            "LINCLS.ENCODER_BN train cannot be combined with LINCLS.CACHED_FEATURES True: with BatchNorm in train mode "
            "the features depend on the batch and the running statistics move every epoch, so they cannot be "
            "extracted once. Set LINCLS.CACHED_FEATURES False (as configs/lincls/rsa_official.yaml does) or "
            "LINCLS.ENCODER_BN eval",
        ),
        (lin.WEIGHT_DECAY >= 0, f"LINCLS.WEIGHT_DECAY must be >= 0, got {lin.WEIGHT_DECAY}"),
        (0 < lin.GAMMA <= 1, f"LINCLS.GAMMA must be in (0, 1], got {lin.GAMMA}"),
        (
            all(isinstance(m, int) and m > 0 for m in milestones)
            and milestones == sorted(set(milestones)),
            f"LINCLS.MILESTONES must be increasing positive epoch numbers, got {milestones}",
        ),
        (
            len(lin.CROP_SCALE) == 2 and 0 < lin.CROP_SCALE[0] <= lin.CROP_SCALE[1] <= 1,
            f"LINCLS.CROP_SCALE must be [min, max] with 0 < min <= max <= 1, got {lin.CROP_SCALE}",
        ),
        (lin.CROP_PADDING >= 0, f"LINCLS.CROP_PADDING must be >= 0, got {lin.CROP_PADDING}"),
        (0 <= lin.FLIP_PROB <= 1, f"LINCLS.FLIP_PROB must be in [0, 1], got {lin.FLIP_PROB}"),
        (
            cfg.DATA.NUM_WORKERS >= -1,
            f"DATA.NUM_WORKERS must be >= 0 (or -1 = as in the checkpoint), "
            f"got {cfg.DATA.NUM_WORKERS}",
        ),
    ]
    raise_first_failed(checks)
