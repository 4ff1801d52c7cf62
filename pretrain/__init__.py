"""MSR pretraining: the public API that tools/, transfer/ and users build on.

Everything listed in ``__all__`` is importable as ``from pretrain import NAME`` and stays stable;
the modules behind it (``pretrain.engine.trainer`` and friends) may change. Names load on first
use, so ``import pretrain`` stays cheap and a tool pays only for what it touches.

    from pretrain import load_config, build_networks, METHODS, msr_loss
    cfg = load_config("cifar10_200ep.yaml", ["METHOD.NAME", "byol"])
    online, target = build_networks(cfg)
"""

from __future__ import annotations

import importlib
from typing import Dict

# public name -> the module that defines it (the package layout is in docs/ARCHITECTURE.md)
_SOURCES: Dict[str, str] = {
    # configuration
    "load_config": "pretrain.config",
    "config_from_yaml_text": "pretrain.config",
    "get_default_config": "pretrain.config",
    "resolve_config_path": "pretrain.config",
    "derived_values": "pretrain.config",
    "effective_lr": "pretrain.config",
    "load_config_tree": "pretrain.config",
    "check_choices": "pretrain.config",
    "raise_first_failed": "pretrain.config",
    "all_keys": "pretrain.config",
    "ConfigError": "pretrain.utils.errors",
    # methods and their loss
    "METHODS": "pretrain.methods",
    "Method": "pretrain.methods",
    "method_of": "pretrain.methods",
    "msr_loss": "pretrain.methods",
    "LossTerms": "pretrain.methods",
    # networks
    "build_networks": "pretrain.modeling.networks",
    "build_encoder": "pretrain.modeling.networks",
    "ResNet": "pretrain.modeling.networks",
    "ARCHITECTURES": "pretrain.modeling.networks",
    "ema_update": "pretrain.modeling.networks",
    # data
    "build_pretrain_dataset": "pretrain.data.datasets",
    "build_eval_datasets": "pretrain.data.datasets",
    "num_classes": "pretrain.data.datasets",
    "KNOWN_TRAIN_SIZES": "pretrain.data.specs",
    "DATASETS": "pretrain.data.specs",
    "DatasetSpec": "pretrain.data.specs",
    "DatasetError": "pretrain.data.datasets",
    "build_pretrain_transform": "pretrain.data.augment",
    "eval_transform": "pretrain.data.augment",
    "to_normalized_tensor": "pretrain.data.augment",
    "ToRGB": "pretrain.data.augment",
    "make_loader": "pretrain.data.loaders",
    "build_eval_loaders": "pretrain.data.loaders",
    "process_share": "pretrain.data.loaders",
    # training
    "Pretrainer": "pretrain.engine.trainer",
    "train_step": "pretrain.engine.trainer",
    "TrainerBase": "pretrain.engine.train_loop",
    "HookBase": "pretrain.engine.train_loop",
    "ProgressBar": "pretrain.engine.hooks",
    "EpochRecord": "pretrain.engine.hooks",
    "PeriodicCheckpoint": "pretrain.engine.hooks",
    "seed_everything": "pretrain.utils.env",
    "build_optimizer": "pretrain.engine.optim",
    "beta_at": "pretrain.engine.schedules",
    "tau_at": "pretrain.engine.schedules",
    "lr_at": "pretrain.engine.schedules",
    # checkpoints
    "load_checkpoint": "pretrain.engine.checkpoint",
    "latest_checkpoint": "pretrain.engine.checkpointer",
    "plot_embedding": "pretrain.viz.embedding",
    "EmbeddingError": "pretrain.viz.embedding",
    "list_checkpoints": "pretrain.engine.checkpointer",
    "Checkpointer": "pretrain.engine.checkpointer",
    "read_checkpoint_file": "pretrain.engine.checkpoint",
    "save_atomic": "pretrain.engine.checkpoint",
    "save_atomic_bytes": "pretrain.engine.checkpoint",
    "rng_states": "pretrain.engine.checkpoint",
    "restore_rng_states": "pretrain.engine.checkpoint",
    "torch_load_quietly": "pretrain.engine.checkpoint",
    "unreadable_message": "pretrain.engine.checkpoint",
    "CheckpointError": "pretrain.engine.checkpoint",
    "CHECKPOINT_KIND": "pretrain.engine.checkpoint",
    "UNSAFE": "pretrain.engine.checkpoint",
    "verify_digest": "pretrain.engine.checkpoint",
    "describe_derived": "pretrain.engine.checkpoint",
    "DERIVED_FROM_KEY": "pretrain.engine.checkpoint",
    "DESCRIPTION_KEY": "pretrain.engine.checkpoint",
    # evaluation
    "knn_top1": "pretrain.engine.knn",
    "knn_of_config": "pretrain.engine.knn",
    "knn_from_checkpoint": "pretrain.engine.knn",
    "load_encoder": "pretrain.engine.knn",
    # presentation
    "plot_runs": "pretrain.viz.plots",
    "read_metrics": "pretrain.viz.plots",
    "PlotError": "pretrain.viz.plots",
    "augmentation_grid": "pretrain.viz.aug_grid",
    "run_demo": "pretrain.viz.demo",
    "DEMO_CONFIG": "pretrain.viz.demo",
    "format_demo_table": "pretrain.viz.demo",
    # infrastructure
    "distributed": "pretrain.utils",
    "UserError": "pretrain.utils.errors",
    "first_line": "pretrain.utils.errors",
    "ensure_output_dir": "pretrain.utils.paths",
    "prepare_run_dir": "pretrain.utils.paths",
    "EXIT_PREEMPTED": "pretrain.utils.preemption",
    "MetricsWriter": "pretrain.utils.logger",
    "progress_bar": "pretrain.utils.logger",
    "setup_logging": "pretrain.utils.logger",
    "add_common_arguments": "pretrain.cli",
    "parse_tool_args": "pretrain.cli",
    "run_main": "pretrain.cli",
    "dry_run_text": "pretrain.cli",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    """Load a public name from its module on first use (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(
            f"module 'pretrain' has no attribute '{name}' (the public names are pretrain.__all__)"
        )
    module = importlib.import_module(_SOURCES[name])
    value = (
        getattr(module, name)
        if hasattr(module, name)
        else importlib.import_module(f"{module.__name__}.{name}")
    )
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
