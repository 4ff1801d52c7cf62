"""The pretraining run: setup (``Pretrainer``), one optimizer step (``train_step``), the epoch loop.

Step counting: ``state.step`` is the number of optimizer steps taken. The j-th step (j = 1, 2, ...)
is taken with state.step = j - 1 and uses lr_at(j - 1) and beta_at(j - 1); right after it,
state.step = j and the target folds in the new online weights with tau_at(j).

The official code (methods/BYOL.py ``update_target`` and methods/RSA.py ``rsa_loss``) counts one
ahead: at the top of the j-th forward pass it sets num_step = j, folds the online weights of step
j - 1 into the target with tau(j), then computes the loss with beta(j). So, for the same online
weights, its EMA uses tau(j + 1) where ours uses tau(j), and its j-th loss uses beta(j) where ours
uses beta(j - 1); its target is also updated before the loss rather than after the step, which is
the same sequence of updates shifted by one (its first update folds in the untrained weights, a
no-op, and the update after the last step never happens). Both shifts are one step of a cosine
over K steps: |tau(j + 1) - tau(j)| <= pi (1 - tau_base) / (2K) and |beta(j) - beta(j - 1)| <=
pi beta_base / (2K), 4e-7 and 1.2e-5 for CIFAR-10's 200 epochs (K = 39000, beta_base 0.3), so they are
immaterial at paper scale (docs/FIDELITY.md). The official small-data lr is also per epoch (a
staircase cosine, train_single.py ``adjust_learning_rate``); ours is per step.

Skipped steps (fp16): when the grad scaler finds inf/NaN gradients it skips the optimizer update;
such a step is not counted. ``state.step`` does not advance, so lr, beta and tau stay where they were,
the target is not updated, and the batch is dropped (counted in ``state.skipped_steps``). The
schedules are functions of completed optimizer steps only; a run with skips follows the same curves
and takes a few more batches to finish.

Position: ``state.batch_in_epoch`` counts the batches consumed in the current epoch (skipped ones
included); checkpoints store it, and a resumed run starts the epoch's sampler at that position.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pretrain.config import ConfigError, config_from_yaml_text, effective_lr
from pretrain.data.augment import build_pretrain_transform
from pretrain.data.datasets import (
    DatasetError,
    build_pretrain_dataset,
    num_classes,
)
from pretrain.data.device_augment import DeviceAggressiveAugment
from pretrain.data.loaders import build_eval_loaders, make_loader
from pretrain.data.sampling import SeededDistributedSampler, SeededTransformDataset
from pretrain.engine.checkpoint import (
    CHECKPOINT_KIND,
    FORMAT_VERSION,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_atomic_bytes,
)
from pretrain.engine.checkpointer import pretrain_checkpointer
from pretrain.engine.hooks import (
    BadImageReport,
    KNNEvaluation,
    PeriodicCheckpoint,
    PeriodicMetrics,
    ProgressBar,
    StopOnSignal,
)
from pretrain.engine.knn import knn_of_config
from pretrain.engine.optim import build_optimizer, set_lr
from pretrain.engine.probe import OnlineProbe, probe_view
from pretrain.engine.schedules import beta_at, lr_at, tau_at
from pretrain.engine.train_loop import TrainerBase
from pretrain.methods import Method, method_of, view_layout
from pretrain.modeling.networks import build_networks, ema_update
from pretrain.modeling.sync_batchnorm import convert_to_sync_batchnorm
from pretrain.utils import distributed as comm
from pretrain.utils.env import seed_everything, use_deterministic_kernels
from pretrain.utils.errors import UserError
from pretrain.utils.logger import MetricsWriter, setup_logging
from pretrain.utils.paths import prepare_run_dir
from pretrain.utils.preemption import StopRequest

logger = logging.getLogger("pretrain")


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or inf; the run stops so the last good checkpoint stays the latest."""


@dataclass
class TrainState:
    """Everything that changes during training and must be checkpointed."""

    online: torch.nn.Module
    target: Optional[torch.nn.Module]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: int = 0  # optimizer steps taken (skipped fp16 steps not counted)
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches consumed in the current epoch (the sampler position)
    skipped_steps: int = 0  # batches whose update the fp16 grad scaler skipped


@dataclass
class StepSettings:
    """Fixed per-run values the training step needs (derived once from the config)."""

    total_steps: int
    warmup_steps: int
    base_lr: float
    min_lr: float
    beta_base: float
    beta_schedule: str
    tau_base: float
    tau_schedule: str
    stop_grad_aa: bool
    method: Method  # views, targets and loss (pretrain.methods.METHODS)
    amp_dtype: Optional[torch.dtype]
    channels_last: bool
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    device_augment: Optional[torch.nn.Module] = None  # t2 on the device (AUG.AGGRESSIVE_ON device)
    layout: str = "multi_stage"  # the loader's views for the method (pretrain.methods.VIEW_LAYOUTS)


def gradient_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norm of all gradients together (0 when there are none)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([g.float() for g in torch._foreach_norm(grads)]))


def _share_cpu_with_loader(num_workers: int) -> None:
    """On CPU, leave one core per loader worker: oversubscribed cores slow both sides down."""
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    threads = max(1, cores - num_workers)
    if torch.get_num_threads() > threads:
        torch.set_num_threads(threads)
        logger.info(
            f"CPU training: {threads} compute thread(s), {num_workers} loader worker(s) on {cores} cores"
        )


def prepare_views(views: Iterable[torch.Tensor], s: StepSettings) -> list:
    """The step's input views on the device: (weak1, weak2, aggressive1, aggressive2) for the multi-stage
    layout, else the two views (view1, view2) of the two-view layouts ("aa", "aw").

    With t2 on the device the loader delivers the two weak views as uint8; the aggressive views are
    made from them here, batched, each image with its own random parameters.
    """
    views = [v.to(s.device, non_blocking=True) for v in views]
    if s.device_augment is not None:
        augment, normalize = s.device_augment, s.device_augment.normalize
        w1, w2 = views
        if s.layout == "multi_stage":
            views = [normalize(w1), normalize(w2), augment(w1), augment(w2)]
        elif s.layout == "aa":
            views = [augment(w1), augment(w2)]
        else:  # "aw": the first view aggressive, the second stays weak
            views = [augment(w1), normalize(w2)]
    return [
        v.contiguous(memory_format=torch.channels_last) if s.channels_last else v for v in views
    ]


def train_step(
    state: TrainState,
    views: Iterable[torch.Tensor],
    s: StepSettings,
    probe: Optional[OnlineProbe] = None,
    labels: Optional[torch.Tensor] = None,
) -> Dict[str, float]:
    """One optimizer step on a batch of views; returns the logged scalars.

    ``views`` as the loader delivers them (see :func:`prepare_views`). With a ``probe`` (and the
    batch's ``labels``) the online linear probe also takes a step (pretrain/engine/probe.py).
    """
    k = state.step
    lr = lr_at(k, s.total_steps, s.base_lr, s.warmup_steps, s.min_lr)
    beta = beta_at(k, s.total_steps, s.beta_base, s.beta_schedule) if s.method.uses_beta else 0.0
    set_lr(state.optimizer, lr)
    views = prepare_views(views, s)

    autocast = torch.autocast(
        s.device.type, dtype=s.amp_dtype or torch.float32, enabled=s.amp_dtype is not None
    )
    with autocast:
        q1, q2, z1, z2 = s.method.outputs(state.online, state.target, views)
    loss, weak_term, aggressive_term = s.method.loss(
        q1, q2, z1, z2, beta, s.stop_grad_aa
    )  # in fp32
    if not torch.isfinite(loss) and s.amp_dtype != torch.float16:
        raise NonFiniteLossError(
            f"Non-finite loss at step {k}: loss={loss.item()}, weak-aggressive term={weak_term.item()}, "
            f"aggressive-aggressive term={aggressive_term.item()}, lr={lr:.6g}, beta={beta:.4f}. The run stopped; "
            f"the last checkpoint in OUTPUT_DIR is intact. Lower SOLVER.BASE_LR, add warm-up "
            f"(SOLVER.WARMUP_EPOCHS) or use SOLVER.AMP bf16/none, then resume from it."
        )

    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(
        state.optimizer
    )  # true gradients (no-op without fp16) for the norm and the step
    grad_norm = gradient_norm(p for group in state.optimizer.param_groups for p in group["params"])
    scale = state.scaler.get_scale() if state.scaler.is_enabled() else 1.0
    state.scaler.step(state.optimizer)
    state.scaler.update()
    skipped = (
        state.scaler.is_enabled() and state.scaler.get_scale() < scale
    )  # the scaler backs off only on inf/NaN
    if skipped:
        state.skipped_steps += 1
    else:
        state.step += 1
        if state.target is not None:
            ema_update(
                state.target,
                _unwrap(state.online),
                tau_at(state.step, s.total_steps, s.tau_base, s.tau_schedule),
            )
    tau = (
        tau_at(state.step, s.total_steps, s.tau_base, s.tau_schedule)
        if state.target is not None
        else float("nan")
    )
    # the logged values are means over all processes (the loss of the global batch)
    logged = comm.all_reduce_mean(torch.stack([loss, weak_term, aggressive_term]).detach()).tolist()
    record = {
        "loss": logged[0],
        "loss_weak_aggressive": logged[1],
        "loss_aggressive_aggressive": logged[2],
        "beta": beta,
        "tau": tau,
        "lr": lr,
        "grad_norm": grad_norm.item(),
        "skipped": int(skipped),
    }
    if probe is not None:
        encoder = _unwrap(state.online).encoder
        record["probe_train_top1"] = probe.step(encoder, probe_view(views, s.layout), labels)
    return record


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain network inside DistributedDataParallel."""
    return module.module if isinstance(module, DistributedDataParallel) else module


class Pretrainer(TrainerBase):
    """Builds data, networks and optimizer from a config; a step is :func:`train_step` on one batch.

    Evaluation, checkpoints, metrics, progress and stopping are hooks (:meth:`build_hooks`).
    """

    def __init__(self, cfg, resume: bool = False):
        super().__init__()
        self.cfg = cfg
        self.device = comm.resolve_device(cfg.DEVICE)
        self.is_main = comm.is_main_process()
        self.output_dir = cfg.OUTPUT_DIR
        self.checkpointer = pretrain_checkpointer(
            self.output_dir, cfg.CHECKPOINT.KEEP_LAST, self.is_main
        )
        self._prepare_output_dir(resume)
        setup_logging(self.output_dir, self.is_main)
        resume_path, checkpoint = (
            self.checkpointer.load_newest(self.device) if resume else (None, None)
        )
        if self.device.type == "cpu":
            _share_cpu_with_loader(cfg.DATA.NUM_WORKERS)
        if cfg.DETERMINISTIC:
            use_deterministic_kernels()

        self.train_loader = self._build_train_loader()
        self.steps_per_epoch = len(self.train_loader)
        seed_everything(cfg.SEED)  # the same initial networks on every process
        online, target = self._build_networks()
        seed_everything(cfg.SEED + comm.get_rank())
        amp = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.SOLVER.AMP]
        self.state = TrainState(
            online,
            target,
            build_optimizer(cfg, online),
            torch.amp.GradScaler(self.device.type, enabled=amp == torch.float16),
        )
        self.settings = self._step_settings(amp)
        self.probe = self._build_probe(online) if cfg.PROBE.ENABLED else None
        self._knn_loaders = None
        self.stop_request = StopRequest()
        self.record: dict = {}  # the last step's logged scalars (hooks complete and write them)
        self.batch_images = 0  # images of the last step over all processes
        self.knn_top1: Optional[float] = None  # the last epoch-level kNN evaluation
        if checkpoint is not None:
            self.load(resume_path, checkpoint)
            if self.is_main:
                drop_metrics_after(self.output_dir, self.state.step)
        self.metrics = MetricsWriter(self.output_dir, self.is_main)
        self.register_hooks(self.build_hooks())

    # ----------------------------------------------------------------------------------- setup
    def _prepare_output_dir(self, resume: bool) -> None:
        """Create OUTPUT_DIR and write config.yaml; refuse to overwrite a run unless resuming."""
        prepare_run_dir(
            self.output_dir,
            "pretraining run",
            self.checkpointer.newest(),
            resume,
            {"config.yaml": self.cfg.dump()},
            self.is_main,
        )
        self.checkpointer.remove_temporaries()

    def _build_train_loader(self) -> DataLoader:
        cfg = self.cfg
        world = comm.get_world_size()
        if cfg.SOLVER.BATCH_SIZE % world:
            raise ConfigError(
                f"SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE} (global) is not divisible by the "
                f"{world} processes; choose a multiple of {world}."
            )
        dataset = build_pretrain_dataset(cfg, build_pretrain_transform(cfg))
        if len(dataset) < cfg.SOLVER.BATCH_SIZE:
            raise DatasetError(
                f"The {cfg.DATA.NAME} training set has {len(dataset)} images, fewer than one batch "
                f"(SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE}); lower the batch size."
            )
        self.sampler = SeededDistributedSampler(
            dataset,
            num_replicas=world,
            rank=comm.get_rank(),
            shuffle=True,
            seed=cfg.SEED,
            drop_last=True,
        )
        return make_loader(
            SeededTransformDataset(dataset),
            cfg.SOLVER.BATCH_SIZE // world,
            cfg.DATA.NUM_WORKERS,
            self.device,
            sampler=self.sampler,
            drop_last=True,
            seed=cfg.SEED * 1000 + comm.get_rank(),
        )

    def _build_networks(self):
        """Online and target networks on the device; SyncBN and DDP when there are several processes."""
        cfg, world = self.cfg, comm.get_world_size()
        online, target = build_networks(cfg)
        self._announce(online)
        if cfg.MODEL.SYNC_BN and world > 1:
            online = convert_to_sync_batchnorm(online, self.device)
            target = convert_to_sync_batchnorm(target, self.device) if target is not None else None
        memory_format = torch.channels_last if cfg.MODEL.CHANNELS_LAST else torch.contiguous_format
        online = online.to(self.device, memory_format=memory_format)
        target = target.to(self.device, memory_format=memory_format) if target is not None else None
        if (
            cfg.MODEL.COMPILE
        ):  # compiles forward in place: parameter names and checkpoints stay the same
            online.compile()
            if target is not None:
                target.compile()
        if world > 1:
            # Buffers are not broadcast: each process keeps the BN statistics of its own batches (or the
            # global ones with SyncBN); only gradients are averaged.
            online = DistributedDataParallel(
                online,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )
        return online, target

    def _build_probe(self, online) -> OnlineProbe:
        """The online linear probe, initialised from SEED on a forked RNG: the same on every process,
        and the pretraining draws the same random numbers with the probe as without it."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.SEED)
            return OnlineProbe(
                _unwrap(online).encoder.out_dim, num_classes(self.cfg), self.cfg.PROBE, self.device
            )

    def _step_settings(self, amp_dtype) -> StepSettings:
        cfg = self.cfg
        total = cfg.SOLVER.MAX_STEPS or cfg.SOLVER.EPOCHS * self.steps_per_epoch
        return StepSettings(
            total_steps=total,
            warmup_steps=int(cfg.SOLVER.WARMUP_EPOCHS * self.steps_per_epoch),
            base_lr=effective_lr(cfg),
            min_lr=cfg.SOLVER.MIN_LR,
            beta_base=cfg.MSR.BETA_BASE,
            beta_schedule=cfg.MSR.BETA_SCHEDULE,
            tau_base=cfg.EMA.TAU_BASE,
            tau_schedule=cfg.EMA.SCHEDULE,
            stop_grad_aa=cfg.MSR.STOP_GRAD_AA,
            method=method_of(cfg),
            amp_dtype=amp_dtype,
            channels_last=cfg.MODEL.CHANNELS_LAST,
            device=self.device,
            device_augment=(
                DeviceAggressiveAugment.from_config(cfg).to(self.device)
                if cfg.AUG.AGGRESSIVE_ON == "device"
                else None
            ),
            layout=view_layout(cfg),
        )

    def _announce(self, online) -> None:
        cfg = self.cfg
        params = sum(p.numel() for p in online.parameters()) / 1e6
        logger.info(
            f"MSR pretraining: method={cfg.METHOD.NAME} data={cfg.DATA.NAME} "
            f"({len(self.train_loader.dataset)} images) backbone={cfg.MODEL.BACKBONE} width={cfg.MODEL.WIDTH} "
            f"stem={cfg.MODEL.STEM} ({params:.2f}M params) device={self.device} "
            f"batch={cfg.SOLVER.BATCH_SIZE} lr={effective_lr(cfg):.4g} steps/epoch={self.steps_per_epoch}"
        )

    # ------------------------------------------------------------------------------ checkpoints
    def checkpoint_dict(self) -> dict:
        st = self.state
        return {
            "kind": CHECKPOINT_KIND,
            "format_version": FORMAT_VERSION,
            "model": _unwrap(st.online).state_dict(),
            "target": st.target.state_dict() if st.target is not None else None,
            "optimizer": st.optimizer.state_dict(),
            "scaler": st.scaler.state_dict(),
            "step": st.step,
            "epoch": st.epoch,
            "batch_in_epoch": st.batch_in_epoch,
            "skipped_steps": st.skipped_steps,
            "config": self.cfg.dump(),
            "rng": rng_states(),
            "probe": self.probe.state_dict() if self.probe is not None else None,
        }

    def save(self) -> str:
        return self.checkpointer.save(self.checkpoint_dict(), self.state.step)

    def load(self, path: str, ckpt: Optional[dict] = None) -> None:
        """Continue the run saved in ``path`` (``ckpt``: its contents when already read)."""
        ckpt = load_checkpoint(path, map_location=self.device) if ckpt is None else ckpt
        saved = config_from_yaml_text(ckpt["config"])
        if (
            saved.METHOD.NAME != self.cfg.METHOD.NAME
            or saved.MODEL.BACKBONE != self.cfg.MODEL.BACKBONE
        ):
            raise ConfigError(
                f"Cannot resume '{path}': it was trained with METHOD.NAME={saved.METHOD.NAME}, "
                f"MODEL.BACKBONE={saved.MODEL.BACKBONE}, but this config says "
                f"{self.cfg.METHOD.NAME}, {self.cfg.MODEL.BACKBONE}. Use the run's own config.yaml."
            )
        st = self.state
        _unwrap(st.online).load_state_dict(ckpt["model"])
        if st.target is not None:
            st.target.load_state_dict(ckpt["target"])
        st.optimizer.load_state_dict(ckpt["optimizer"])
        st.scaler.load_state_dict(ckpt["scaler"])
        st.step, st.epoch = ckpt["step"], ckpt["epoch"]
        st.batch_in_epoch, st.skipped_steps = (
            ckpt.get("batch_in_epoch", 0),
            ckpt.get("skipped_steps", 0),
        )
        restore_rng_states(ckpt["rng"])
        if self.probe is not None and ckpt.get("probe"):
            self.probe.load_state_dict(ckpt["probe"])
        elif self.probe is not None:
            logger.warning(
                f"{path} holds no online probe (PROBE.ENABLED was off): it starts afresh."
            )
        logger.info(
            f"Resumed from {path} at step {st.step} (epoch {st.epoch}, batch {st.batch_in_epoch})"
        )

    # ------------------------------------------------------------------------------------ kNN
    def evaluate_knn(self) -> float:
        cfg = self.cfg
        if self._knn_loaders is None:
            self._knn_loaders = build_eval_loaders(cfg, self.device)
        top1 = knn_of_config(
            _unwrap(self.state.online).encoder, cfg, self.device, self._knn_loaders
        )
        record = {"step": self.state.step, "epoch": self.state.epoch, "knn_top1": top1}
        message = f"kNN top-1 at step {self.state.step}: {top1:.2f}"
        if self.probe is not None:
            encoder = _unwrap(self.state.online).encoder
            record["probe_top1"] = self.probe.evaluate(encoder, self._knn_loaders[1])
            message += f", online probe top-1 {record['probe_top1']:.2f}"
        self.metrics.write(record)
        logger.info(message)
        return top1

    # ---------------------------------------------------------------------------------- train
    def epoch_batches(self):
        """The train loader from the current position of the current epoch, networks in train mode."""
        st = self.state
        self.sampler.set_epoch(st.epoch)
        self.sampler.set_start(
            st.batch_in_epoch * (self.cfg.SOLVER.BATCH_SIZE // comm.get_world_size())
        )
        st.online.train()
        if st.target is not None:
            st.target.train()
        return self.train_loader

    def run_step(self, batch) -> None:
        """One optimizer step; the step's record, image count and skip flag are left for the hooks."""
        st, s = self.state, self.settings
        views, labels = batch
        self.record = train_step(st, views, s, self.probe, labels)
        self.step_skipped = bool(self.record.pop("skipped"))
        if st.scaler.is_enabled():  # fp16: how many updates the grad scaler has skipped so far
            self.record["skipped_steps"] = st.skipped_steps
        st.batch_in_epoch += 1
        self.batch_images = views[0].shape[0] * comm.get_world_size()
        self.at_epoch_end = st.batch_in_epoch == self.steps_per_epoch or st.step >= s.total_steps

    def end_epoch(self) -> None:
        self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0

    @property
    def finished(self) -> bool:
        return self.state.step >= self.settings.total_steps

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def iteration(self) -> int:
        return self.state.step

    @property
    def total_iterations(self) -> int:
        return self.settings.total_steps

    @property
    def progress_label(self) -> str:
        return f"epoch {self.state.epoch}"

    @property
    def remaining_in_epoch(self) -> int:
        """Steps left in the current epoch (fewer when training ends inside it)."""
        st, s = self.state, self.settings
        return min(self.steps_per_epoch - st.batch_in_epoch, s.total_steps - st.step)

    def build_hooks(self) -> list:
        """The periodic actions of a pretraining run, in the order they act (pretrain/engine/hooks.py)."""
        cfg = self.cfg
        return [
            PeriodicMetrics(cfg.LOG_PERIOD),
            ProgressBar(cfg.PROGRESS_BAR and self.is_main, cfg.LOG_PERIOD),
            KNNEvaluation(cfg.KNN.PERIOD, cfg.KNN.STEP_PERIOD, cfg.KNN.AT_START),
            PeriodicCheckpoint(cfg.CHECKPOINT.PERIOD, cfg.CHECKPOINT.STEP_PERIOD),
            BadImageReport(),
            StopOnSignal(self.stop_request, self.device),
        ]

    def train(self) -> dict:
        """Run until the total number of steps, or until SIGTERM/SIGUSR1 (then save and return preempted).

        Returns {"step", "knn_top1" (final, when enabled), "preempted"}.
        """
        self.knn_top1 = None
        try:
            self.run_loop()
        finally:
            self.metrics.close()
        return {
            "step": self.state.step,
            "knn_top1": self.knn_top1,
            "preempted": self.stop_reason is not None,
        }


def drop_metrics_after(output_dir: str, step: int) -> None:
    """Remove metrics.jsonl lines of steps after ``step``: a killed run logged them, the resumed run redoes them."""
    path = os.path.join(output_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return
    with open(path, "r", encoding="utf-8") as handle:
        lines = handle.readlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        save_atomic_bytes("".join(kept).encode("utf-8"), path)
