"""All pretraining settings, each defined once with its default and a one-line comment.

Experiment files under ``configs/pretrain/`` override these defaults (yacs style, with
``_BASE_`` inheritance); command-line ``KEY VALUE`` pairs override the files.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from typing import Callable, Iterable, Optional

import yaml
from yacs.config import CfgNode as CN

from pretrain.data.specs import DATASETS
from pretrain.methods import METHODS, VIEWS
from pretrain.utils.errors import ConfigError

CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "pretrain"
)
BASE_KEY = "_BASE_"

_C = CN()

# ---------------------------------------------------------------------------------------------
# Method
# ---------------------------------------------------------------------------------------------
_C.METHOD = CN()
# Training mode: "msr" (default), "byol", "simsiam" or "simsiam_msr" (SimSiam + MSR).
_C.METHOD.NAME = "msr"
# byol/simsiam views: "AA" 2 aggressive; "AW" 1 aggressive + 1 weak, independent crops (official BYOL-AW).
_C.METHOD.VIEWS = "AA"

_C.MSR = CN()
# beta_base of eq. 6: weight of the aggressive-aggressive term (0.3 CIFAR, 0.4 larger data).
_C.MSR.BETA_BASE = 0.4
# "cosine" decays beta from BETA_BASE to 0 over training (eq. 6); "constant" keeps BETA_BASE.
_C.MSR.BETA_SCHEDULE = "cosine"
# Stop the gradient of the other aggressive view in the beta term (as the public code does).
_C.MSR.STOP_GRAD_AA = True

_C.EMA = CN()
# tau_base of the target's exponential moving average (BYOL/MSR); unused by simsiam modes.
_C.EMA.TAU_BASE = 0.99
# "cosine" raises tau from TAU_BASE to 1 over training; "constant" keeps TAU_BASE.
_C.EMA.SCHEDULE = "cosine"

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
# Encoder: "resnet18", "resnet34" or "resnet50" (torchvision layer names, so it converts to Detectron2).
_C.MODEL.BACKBONE = "resnet18"
# Stem: "cifar" (3x3 conv stride 1, no max-pool; 32/64 px) or "imagenet" (7x7/2 + max-pool).
_C.MODEL.STEM = "cifar"
# Channels of the first stage (64 is the standard ResNet; 16 or 32 make a fast CPU model).
_C.MODEL.WIDTH = 64
# Zero-initialise the last BatchNorm of each residual block (as the public MSR code does).
_C.MODEL.ZERO_INIT_RESIDUAL = True
# Hidden width of the projector and predictor MLPs (1024 for ResNet-18, 4096 for ResNet-50).
_C.MODEL.HIDDEN_DIM = 1024
# Output width of the projector and predictor (128 for ResNet-18, 256 for ResNet-50).
_C.MODEL.OUT_DIM = 128
# Convert BatchNorm to SyncBatchNorm when running on more than one process.
_C.MODEL.SYNC_BN = False
# Use the channels_last memory format (faster convolutions on recent GPUs).
_C.MODEL.CHANNELS_LAST = False
# Compile the online and target networks with torch.compile (faster steps on GPUs after a warm-up compile).
_C.MODEL.COMPILE = False

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
_C.DATA = CN()
# Dataset: digits, fashion_mnist, cifar10, cifar100, stl10, tiny_imagenet, imagenet100 or imagenet.
_C.DATA.NAME = "digits"
# Folder that holds the dataset (relative paths are relative to the working directory).
_C.DATA.ROOT = "datasets"
# Let torchvision download CIFAR / STL-10 into DATA.ROOT when missing (never done unasked).
_C.DATA.DOWNLOAD = False
# Side of the square training crops in pixels (32 CIFAR, 64 STL-10/Tiny ImageNet, 224 ImageNet).
_C.DATA.IMAGE_SIZE = 32
# Side of kNN / linear-test images (0 = DATA.IMAGE_SIZE; 96 = STL-10's native size, as the official code).
_C.DATA.EVAL_SIZE = 0
# Per-channel mean used to normalise images (RGB, 0-1 scale).
_C.DATA.MEAN = [0.485, 0.456, 0.406]
# Per-channel standard deviation used to normalise images (RGB, 0-1 scale).
_C.DATA.STD = [0.229, 0.224, 0.225]
# Loader worker processes (0 loads in the main process).
_C.DATA.NUM_WORKERS = 4
# Class list restricting an ImageFolder dataset ("" = builtin CMC list for imagenet100, else all).
_C.DATA.CLASS_LIST = ""
# What to do with an image file that cannot be decoded: "skip" (warn, use another image, count) or "fail".
_C.DATA.BAD_IMAGES = "skip"

# ---------------------------------------------------------------------------------------------
# Augmentation (t1 weak, t2 aggressive; t2 is applied to the output of t1)
# ---------------------------------------------------------------------------------------------
_C.AUG = CN()
# Scale range of t1's RandomResizedCrop (MoCo v2: 0.2-1.0).
_C.AUG.CROP_SCALE = [0.2, 1.0]
# Probability of t1's horizontal flip.
_C.AUG.FLIP_PROB = 0.5
# ColorJitter strengths of t2: brightness, contrast, saturation, hue.
_C.AUG.JITTER = [0.4, 0.4, 0.4, 0.1]
# Probability that t2 applies colour jitter.
_C.AUG.JITTER_PROB = 0.8
# Probability that t2 converts to grayscale.
_C.AUG.GRAY_PROB = 0.2
# Probability that t2 applies Gaussian blur.
_C.AUG.BLUR_PROB = 0.5
# Range of the Gaussian blur sigma in pixels.
_C.AUG.BLUR_SIGMA = [0.1, 2.0]
# Where t2 runs: "cpu" (loader workers, PIL) or "device" (batched on the training device with per-image
# parameters; the loader then sends only the two weak views as uint8 tensors).
_C.AUG.AGGRESSIVE_ON = "cpu"

# ---------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
# "sgd" or "lars" (timm's LARS; biases and norm parameters get no decay and no adaptation).
_C.SOLVER.OPTIMIZER = "sgd"
# Learning rate at a batch of SOLVER.REFERENCE_BATCH; the effective lr is BASE_LR * BATCH_SIZE / REFERENCE_BATCH.
_C.SOLVER.BASE_LR = 0.1
# Batch size at which BASE_LR is given (linear scaling rule).
_C.SOLVER.REFERENCE_BATCH = 256
# Global batch size (summed over all processes).
_C.SOLVER.BATCH_SIZE = 256
# Training length in epochs.
_C.SOLVER.EPOCHS = 200
# If > 0, stop after this many optimizer steps instead (schedules span MAX_STEPS); for quick runs.
_C.SOLVER.MAX_STEPS = 0
# Linear warm-up length in epochs (per-iteration ramp), followed by cosine decay.
_C.SOLVER.WARMUP_EPOCHS = 0
# Learning rate reached at the end of the cosine decay.
_C.SOLVER.MIN_LR = 0.0
# SGD / LARS momentum.
_C.SOLVER.MOMENTUM = 0.9
# Weight decay (applied to all parameters with SGD; to weights only with LARS).
_C.SOLVER.WEIGHT_DECAY = 5e-4
# LARS trust coefficient (eta).
_C.SOLVER.LARS_TRUST_COEF = 0.001
# Mixed precision: "none", "fp16" (with GradScaler) or "bf16". The loss is always computed in fp32.
_C.SOLVER.AMP = "none"
# Optimizer kernels: "auto" (torch's choice: foreach on GPU), "fused" (SGD on CUDA/CPU), "foreach" or "for_loop".
_C.SOLVER.OPTIMIZER_IMPL = "auto"

# ---------------------------------------------------------------------------------------------
# Monitoring, checkpoints, run
# ---------------------------------------------------------------------------------------------
_C.KNN = CN()
# Run the kNN monitor every this many epochs (0 disables it; it always runs at the end when > 0).
_C.KNN.PERIOD = 10
# Number of neighbours.
_C.KNN.K = 200
# Temperature of the similarity weighting.
_C.KNN.TEMPERATURE = 0.1
# Batch size for feature extraction.
_C.KNN.BATCH_SIZE = 256
# Also evaluate before the first step of a new run (the "random init" reference point).
_C.KNN.AT_START = False
# Also evaluate after this many optimizer steps (0 = only on epoch boundaries); for short runs.
_C.KNN.STEP_PERIOD = 0

_C.PROBE = CN()
# Train a linear classifier on detached features of each step's least-augmented view (labelled data only).
_C.PROBE.ENABLED = False
# SGD learning rate of the probe (its own optimizer, constant).
_C.PROBE.LR = 0.1
# SGD momentum of the probe.
_C.PROBE.MOMENTUM = 0.9
# Weight decay of the probe.
_C.PROBE.WEIGHT_DECAY = 0.0

_C.CHECKPOINT = CN()
# Save a checkpoint every this many epochs (the final one is always saved).
_C.CHECKPOINT.PERIOD = 10
# Number of periodic checkpoints kept in OUTPUT_DIR (older ones are deleted; 0 keeps all).
_C.CHECKPOINT.KEEP_LAST = 3
# Also save every this many optimizer steps, mid-epoch included (0 = only on epoch boundaries).
_C.CHECKPOINT.STEP_PERIOD = 0

# Folder for config.yaml, log.txt, metrics.jsonl, TensorBoard events and checkpoints.
_C.OUTPUT_DIR = "output/pretrain"
# Random seed (python, numpy, torch, loader workers).
_C.SEED = 0
# Deterministic kernels (torch.use_deterministic_algorithms, no cuDNN autotuning): bitwise-repeatable, slower.
_C.DETERMINISTIC = False
# "auto" (cuda when available), "cpu" or "cuda".
_C.DEVICE = "auto"
# Record training metrics (metrics.jsonl, TensorBoard) every this many steps; without a live bar, also a log line.
_C.LOG_PERIOD = 10
# Show a tqdm progress bar when stderr is a terminal; otherwise (files, SLURM, CI) one log line per LOG_PERIOD.
_C.PROGRESS_BAR = True

CHOICES = {
    "METHOD.NAME": tuple(METHODS),
    "METHOD.VIEWS": VIEWS,
    "MSR.BETA_SCHEDULE": ("cosine", "constant"),
    "EMA.SCHEDULE": ("cosine", "constant"),
    "MODEL.BACKBONE": ("resnet18", "resnet34", "resnet50"),
    "MODEL.STEM": ("cifar", "imagenet"),
    "DATA.NAME": tuple(DATASETS),
    "SOLVER.OPTIMIZER": ("sgd", "lars"),
    "AUG.AGGRESSIVE_ON": ("cpu", "device"),
    "SOLVER.AMP": ("none", "fp16", "bf16"),
    "SOLVER.OPTIMIZER_IMPL": ("auto", "fused", "foreach", "for_loop"),
    "DATA.BAD_IMAGES": ("skip", "fail"),
    "DEVICE": ("auto", "cpu", "cuda"),
}


def get_default_config() -> CN:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()


def all_keys(node: CN, prefix: str = "") -> list:
    """Every leaf key of a config tree (yacs or Detectron2), dotted: ["MODEL.WIDTH", ...]."""
    keys = []
    for name, value in node.items():
        full = prefix + name
        keys.extend(all_keys(value, full + ".") if isinstance(value, CN) else [full])
    return keys


def _unknown_key_error(
    key: str, defaults: Optional[CN] = None, defined_in: str = "pretrain/config.py"
) -> ConfigError:
    candidates = all_keys(_C if defaults is None else defaults)
    leaf = key.split(".")[-1].upper()
    same_leaf = [k for k in candidates if k.split(".")[-1] == leaf]  # right name, wrong section
    close = same_leaf or difflib.get_close_matches(key.upper(), candidates, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(
        f"Unknown config key '{key}'.{hint} Every valid key is defined, with a comment, "
        f"in {defined_in}."
    )


def _check_keys(
    data: dict,
    prefix: str = "",
    defaults: Optional[CN] = None,
    defined_in: str = "pretrain/config.py",
) -> None:
    """Reject keys absent from ``defaults`` (the pretraining defaults unless another tree is given)."""
    for name, value in data.items():
        full = prefix + name
        node = _C if defaults is None else defaults
        for part in full.split("."):
            if not isinstance(node, CN) or part not in node:
                raise _unknown_key_error(full, defaults, defined_in)
            node = node[part]
        if isinstance(value, dict):
            if not isinstance(node, CN):
                raise ConfigError(
                    f"Config key '{full}' is a value, not a section; remove the nested keys under it."
                )
            _check_keys(value, full + ".", defaults, defined_in)
        elif isinstance(node, float) and isinstance(value, int) and not isinstance(value, bool):
            data[name] = float(value)  # "SOLVER.BASE_LR 1" means 1.0


def resolve_config_path(name: str, config_dir: str = CONFIG_DIR) -> str:
    """A path that exists is used as is; a bare name is looked up in ``configs/pretrain/``."""
    if os.path.isfile(name):
        return name
    candidate = os.path.join(config_dir, name)
    for path in (candidate, candidate + ".yaml"):
        if os.path.isfile(path):
            return path
    available = (
        sorted(f for f in os.listdir(config_dir) if f.endswith(".yaml"))
        if os.path.isdir(config_dir)
        else []
    )
    close = difflib.get_close_matches(os.path.basename(name), available, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"Config '{name}' not found, neither as a path nor in {config_dir}.{hint} "
        f"Available: {', '.join(available) or 'none'}."
    )


def _load_yaml_chain(path: str, seen: Optional[set] = None) -> dict:
    """Read a YAML file with safe loading and merge it over its ``_BASE_`` (relative to the file)."""
    seen = set() if seen is None else seen
    real = os.path.realpath(path)
    if real in seen:
        raise ConfigError(f"Config '{path}' inherits from itself through _BASE_; remove the cycle.")
    seen.add(real)
    with open(path, "r", encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"Config '{path}' is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config '{path}' must be a mapping of KEY: value, got {type(data).__name__}."
        )
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    if not os.path.isfile(base_path):
        raise ConfigError(
            f"Config '{path}' names _BASE_ '{base}', which does not exist at {base_path}."
        )
    return _merge_dicts(_load_yaml_chain(base_path, seen), data)


def _merge_dicts(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def _merge(
    cfg: CN,
    data: dict,
    source: str,
    defaults: Optional[CN] = None,
    defined_in: str = "pretrain/config.py",
) -> None:
    _check_keys(data, "", defaults, defined_in)
    try:
        cfg.merge_from_other_cfg(CN(data))
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(_bad_value_message(err, source)) from None


_TYPE_NAMES = {
    "float": "a number",
    "int": "an integer",
    "bool": "True or False",
    "str": "text",
    "list": "a list such as [0.2, 1.0]",
    "tuple": "a list such as [0.2, 1.0]",
}
_MISMATCH = re.compile(
    r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) "
    r"for config key: (\S+)"
)


def _bad_value_message(err: Exception, source: str) -> str:
    """yacs's type-mismatch error as one sentence naming the key, the expected type and the fix."""
    match = _MISMATCH.search(str(err))
    if not match:
        return f"Bad value in {source}: {err}"
    expected, _, default, value, key = match.groups()
    return (
        f"{key} must be {_TYPE_NAMES.get(expected, expected)}, got '{value}' in {source} (the current value "
        f"is {default}). Fix it in the config file or with a KEY VALUE override, e.g. {key} {default}."
    )


def _override_pairs(opts: Iterable[str]) -> dict:
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"Overrides come as KEY VALUE pairs; '{opts[-1]}' has no value.")
    tree: dict = {}
    for key, text in zip(opts[0::2], opts[1::2]):
        if key.startswith("-"):
            raise ConfigError(
                f"Unknown option '{key}'. Overrides are written KEY VALUE, e.g. SOLVER.BASE_LR 0.05."
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def load_config_tree(
    defaults: CN,
    cfg_file: Optional[str],
    opts: Iterable[str],
    config_dir: str,
    defined_in: str,
    validate_fn: Callable[[CN], None],
) -> CN:
    """The one config loader: ``defaults``, then the file (and its ``_BASE_`` chain; a bare name is
    looked up in ``config_dir``), then ``KEY VALUE`` overrides; unknown keys are refused with a hint
    and the module that defines the keys (``defined_in``); then ``validate_fn``; frozen.

    The pretraining config (:func:`load_config`) and the linear-evaluation one
    (``transfer.lincls_config``) are both loaded by it.
    """
    cfg = defaults.clone()
    if cfg_file:
        path = resolve_config_path(cfg_file, config_dir)
        _merge(cfg, _load_yaml_chain(path), f"config file '{path}'", defaults, defined_in)
    _merge(cfg, _override_pairs(opts), "command-line overrides", defaults, defined_in)
    validate_fn(cfg)
    cfg.freeze()
    return cfg


def load_config(cfg_file: Optional[str] = None, opts: Iterable[str] = ()) -> CN:
    """Defaults, then the config file (and its bases), then ``KEY VALUE`` overrides; validated, frozen."""
    return load_config_tree(_C, cfg_file, opts, CONFIG_DIR, "pretrain/config.py", validate)


def config_from_yaml_text(text: str, opts: Iterable[str] = ()) -> CN:
    """Rebuild a config saved in a checkpoint or ``config.yaml`` (safe YAML), then apply overrides."""
    cfg = get_default_config()
    _merge(cfg, yaml.safe_load(text) or {}, "saved config")
    _merge(cfg, _override_pairs(opts), "command-line overrides")
    validate(cfg)
    cfg.freeze()
    return cfg


def check_choices(cfg: CN, choices: dict) -> None:
    """Every key of ``choices`` must hold one of its allowed values; the error suggests the closest."""
    for key, allowed in choices.items():
        section, _, leaf = key.rpartition(".")
        value = cfg[section][leaf] if section else cfg[leaf]
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{key} = '{value}' is not valid.{hint} Choose one of: {', '.join(allowed)}."
            )


def raise_first_failed(checks) -> None:
    """``checks`` are (condition, message) pairs; the first false condition becomes a ConfigError."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{message}. Fix it in the config file or with a KEY VALUE override.")


def validate(cfg: CN) -> None:
    """Reject values that are out of range or not among the documented choices."""
    check_choices(cfg, CHOICES)
    sol, aug = cfg.SOLVER, cfg.AUG
    checks = [
        (sol.BASE_LR > 0, f"SOLVER.BASE_LR must be > 0, got {sol.BASE_LR}"),
        (sol.BATCH_SIZE > 0, f"SOLVER.BATCH_SIZE must be > 0, got {sol.BATCH_SIZE}"),
        (sol.REFERENCE_BATCH > 0, f"SOLVER.REFERENCE_BATCH must be > 0, got {sol.REFERENCE_BATCH}"),
        (sol.EPOCHS > 0, f"SOLVER.EPOCHS must be > 0, got {sol.EPOCHS}"),
        (sol.MAX_STEPS >= 0, f"SOLVER.MAX_STEPS must be >= 0, got {sol.MAX_STEPS}"),
        (
            0 <= sol.WARMUP_EPOCHS < sol.EPOCHS,
            f"SOLVER.WARMUP_EPOCHS must be in [0, SOLVER.EPOCHS={sol.EPOCHS}), got {sol.WARMUP_EPOCHS}",
        ),
        (sol.WEIGHT_DECAY >= 0, f"SOLVER.WEIGHT_DECAY must be >= 0, got {sol.WEIGHT_DECAY}"),
        (0 <= cfg.MSR.BETA_BASE <= 1, f"MSR.BETA_BASE must be in [0, 1], got {cfg.MSR.BETA_BASE}"),
        (0 <= cfg.EMA.TAU_BASE <= 1, f"EMA.TAU_BASE must be in [0, 1], got {cfg.EMA.TAU_BASE}"),
        (cfg.MODEL.WIDTH > 0, f"MODEL.WIDTH must be > 0, got {cfg.MODEL.WIDTH}"),
        (cfg.DATA.IMAGE_SIZE >= 8, f"DATA.IMAGE_SIZE must be >= 8, got {cfg.DATA.IMAGE_SIZE}"),
        (
            cfg.DATA.EVAL_SIZE == 0 or cfg.DATA.EVAL_SIZE >= 8,
            f"DATA.EVAL_SIZE must be 0 (= DATA.IMAGE_SIZE) or >= 8, got {cfg.DATA.EVAL_SIZE}",
        ),
        (
            len(cfg.DATA.MEAN) == 3 and len(cfg.DATA.STD) == 3 and min(cfg.DATA.STD) > 0,
            f"DATA.MEAN and DATA.STD need 3 values (RGB), STD > 0; got {cfg.DATA.MEAN}, {cfg.DATA.STD}",
        ),
        (
            len(aug.CROP_SCALE) == 2 and 0 < aug.CROP_SCALE[0] <= aug.CROP_SCALE[1] <= 1,
            f"AUG.CROP_SCALE must be [min, max] with 0 < min <= max <= 1, got {aug.CROP_SCALE}",
        ),
        (
            len(aug.BLUR_SIGMA) == 2 and 0 < aug.BLUR_SIGMA[0] <= aug.BLUR_SIGMA[1],
            f"AUG.BLUR_SIGMA must be [min, max] with 0 < min <= max, got {aug.BLUR_SIGMA}",
        ),
        (
            len(aug.JITTER) == 4,
            f"AUG.JITTER needs 4 values (brightness, contrast, saturation, hue), got {aug.JITTER}",
        ),
        (
            all(
                0 <= p <= 1 for p in (aug.FLIP_PROB, aug.JITTER_PROB, aug.GRAY_PROB, aug.BLUR_PROB)
            ),
            "AUG.FLIP_PROB, JITTER_PROB, GRAY_PROB and BLUR_PROB must be in [0, 1]",
        ),
        (
            cfg.KNN.K > 0 and cfg.KNN.TEMPERATURE > 0,
            f"KNN.K and KNN.TEMPERATURE must be > 0, got {cfg.KNN.K}, {cfg.KNN.TEMPERATURE}",
        ),
        (cfg.CHECKPOINT.PERIOD > 0, f"CHECKPOINT.PERIOD must be > 0, got {cfg.CHECKPOINT.PERIOD}"),
        (
            cfg.CHECKPOINT.STEP_PERIOD >= 0,
            f"CHECKPOINT.STEP_PERIOD must be >= 0, got {cfg.CHECKPOINT.STEP_PERIOD}",
        ),
        (
            cfg.PROBE.LR > 0 and cfg.PROBE.MOMENTUM >= 0 and cfg.PROBE.WEIGHT_DECAY >= 0,
            f"PROBE.LR must be > 0 and PROBE.MOMENTUM, PROBE.WEIGHT_DECAY >= 0, got {cfg.PROBE.LR}, "
            f"{cfg.PROBE.MOMENTUM}, {cfg.PROBE.WEIGHT_DECAY}",
        ),
        (
            not cfg.PROBE.ENABLED or "unlabeled" not in DATASETS[cfg.DATA.NAME].splits[0],
            f"PROBE.ENABLED needs a label for every pretraining image, but DATA.NAME {cfg.DATA.NAME} "
            f"pretrains on its '{DATASETS[cfg.DATA.NAME].splits[0]}' split, whose unlabeled images have "
            f"none. Turn the probe off (PROBE.ENABLED False) and follow the kNN monitor (KNN.PERIOD) "
            f"instead, or run tools/lincls.py on a checkpoint.",
        ),
    ]
    raise_first_failed(checks)


def effective_lr(cfg: CN) -> float:
    """BASE_LR scaled linearly by the global batch size."""
    return cfg.SOLVER.BASE_LR * cfg.SOLVER.BATCH_SIZE / cfg.SOLVER.REFERENCE_BATCH


def derived_values(cfg: CN, num_train_images: Optional[int] = None) -> dict:
    """Numbers a user wants to see before launching: effective lr, steps per epoch, total and warm-up steps."""
    out = {"effective_lr": effective_lr(cfg), "global_batch_size": cfg.SOLVER.BATCH_SIZE}
    if num_train_images is None:
        out.update(
            {
                "steps_per_epoch": "unknown (data size not known)",
                "total_steps": cfg.SOLVER.MAX_STEPS or "SOLVER.EPOCHS x steps_per_epoch",
                "warmup_steps": "SOLVER.WARMUP_EPOCHS x steps_per_epoch",
            }
        )
        return out
    steps_per_epoch = num_train_images // cfg.SOLVER.BATCH_SIZE
    total = cfg.SOLVER.MAX_STEPS or steps_per_epoch * cfg.SOLVER.EPOCHS
    out.update(
        {
            "num_train_images": num_train_images,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total,
            "warmup_steps": int(math.floor(cfg.SOLVER.WARMUP_EPOCHS * steps_per_epoch)),
        }
    )
    return out
