"""Linear evaluation of a pretrained encoder: a linear classifier on frozen, globally pooled features.

The encoder of a pretraining checkpoint (online by default, or the EMA target) is frozen: its
parameters get no gradient and never change. Only a linear layer is trained, with SGD (optionally
Nesterov) and a step learning-rate schedule; it is initialised as in MoCo and in the official MSR
eval_single.py, weights N(0, 0.01) and zero bias. The data set, image size, normalisation and
backbone come from the pretraining config saved in the checkpoint; the protocol (epochs, lr,
milestones, feature normalisation, ...) from a ``configs/lincls/`` file, see transfer/lincls_config.py.

- ``LINCLS.ENCODER_BN eval`` (default, MoCo v2 protocol): the encoder stays in eval mode, so BatchNorm
  uses (and never updates) the checkpoint's running statistics. Test features then never depend on
  the classifier: they are extracted once and every epoch is evaluated on them.
- ``LINCLS.ENCODER_BN train`` (the official small-data protocol, ``configs/lincls/rsa_official.yaml``):
  during the classifier's training batches the encoder is in train mode, so its BatchNorm layers
  normalise with batch statistics and their running statistics move; the test pass is in eval mode
  with those moved statistics, so test features are re-extracted after every epoch. The running
  statistics are part of the evaluation state (saved in the checkpoint, restored on resume). With
  several processes each normalises its own part of the batch (no SyncBN) and the running statistics
  are averaged over the processes at the end of every epoch, so all processes test with the same
  statistics and rank 0's, which are saved, are everyone's. Incompatible with cached features; the
  l2_standardize statistics (below) are computed once, with the checkpoint's running statistics.
- ``LINCLS.CACHED_FEATURES``: training features are also extracted once, without augmentation, and
  the classifier trains on the cached tensors: much faster, but without training augmentation.
- ``LINCLS.TEST_RESIZE``: the test transform is the pretraining eval transform (resize + centre crop,
  default) or, when False, a centre crop of the native image only (eval_single.py). The same transform
  makes the cached and the standardisation features.
- ``LINCLS.FEATURE_NORM l2_standardize`` (Mean Shift protocol): features are L2-normalised, then
  standardised with the per-dimension mean and (population) std of the L2-normalised training
  features, computed once without augmentation (eps 1e-5 added to the variance, as in BatchNorm);
  the same statistics apply to train and test.
  They are buffers of the classifier module, so they are saved with it.
- Reporting: THE result is the top-1 (and top-5) after the last epoch. The best epoch's top-1 and its
  epoch number are reported too, labelled "selected on the test set": choosing the epoch on the test
  split (as eval_single.py does) is optimistic and not a held-out result.
- Every epoch writes ``lincls_checkpoint.pth`` atomically (classifier, optimizer, scheduler, epoch,
  best and last accuracy, best epoch, encoder BN statistics in ENCODER_BN train, RNG); ``resume=True``
  continues it. Each epoch's shuffling and augmentation are seeded from (SEED, epoch), so a resumed
  run ends where an uninterrupted one does. Checkpoints of earlier versions (no best epoch) still load;
  their best epoch is unknown (None) until a later epoch beats their best top-1.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, RandomSampler
from torchvision import transforms as T

from pretrain import (
    DERIVED_FROM_KEY,
    DESCRIPTION_KEY,
    Checkpointer,
    CheckpointError,
    ConfigError,
    EpochRecord,
    MetricsWriter,
    PeriodicCheckpoint,
    ProgressBar,
    ToRGB,
    TrainerBase,
    build_eval_datasets,
    config_from_yaml_text,
    eval_transform,
    first_line,
    load_checkpoint,
    load_encoder,
    make_loader,
    num_classes,
    prepare_run_dir,
    process_share,
    progress_bar,
    read_checkpoint_file,
    resolve_config_path,
    restore_rng_states,
    rng_states,
    seed_everything,
    setup_logging,
    to_normalized_tensor,
)
from pretrain import (
    distributed as comm,
)

from .lincls_config import CONFIG_DIR, load_lincls_config

logger = logging.getLogger(
    "pretrain.lincls"
)  # a child of the "pretrain" logger: same console and log.txt
LINCLS_KIND = "msr_lincls"  # the "kind" of the checkpoints this module writes
LINCLS_DESCRIPTION = (
    "a linear-evaluation checkpoint written by tools/lincls.py"  # how errors name these files
)

LINCLS_FORMAT_VERSION = (
    1  # later keys (best_epoch, encoder_bn, encoder_buffers) are optional: no bump needed
)
LINCLS_CHECKPOINT = "lincls_checkpoint.pth"
BEST_SELECTION = (
    "test set"  # what the best epoch is selected on: metrics.jsonl's "best_selected_on"
)
_AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# =================================================================================================
# The classifier and its feature normalisation
# =================================================================================================
class LinearClassifier(nn.Module):
    """Optional L2 + standardisation of the features (fixed buffers), then one linear layer.

    The layer is initialised as in MoCo's linear evaluation and the official MSR eval_single.py:
    weights N(0, 0.01), zero bias.
    """

    def __init__(self, in_dim: int, num_classes: int, feature_norm: str = "none"):
        super().__init__()
        self.feature_norm = feature_norm
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("inv_std", torch.ones(in_dim))
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    @torch.no_grad()
    def set_statistics(self, train_features: torch.Tensor, eps: float = 1e-5) -> None:
        """Per-dimension mean and population std of the L2-normalised training features.

        As in BatchNorm, ``eps`` is added to the variance: a dimension that is constant (e.g. always 0
        after a ReLU) on the un-augmented training images must not blow up when an augmented view
        makes it non-zero (the L2-normalised value is at most 1, so it is scaled by at most 1/sqrt(eps)).
        """
        x = F.normalize(train_features.float(), dim=1)
        self.mean.copy_(x.mean(dim=0))
        self.inv_std.copy_(torch.rsqrt(x.var(dim=0, unbiased=False) + eps))

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        if self.feature_norm == "l2_standardize":
            return (F.normalize(features, dim=1) - self.mean) * self.inv_std
        return features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.normalize(features.float()))


def build_optimizer(
    head: nn.Module, cfg
) -> Tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
    """SGD (Nesterov if LINCLS.NESTEROV) over the classifier's parameters and the per-epoch step schedule."""
    lin = cfg.LINCLS
    optimizer = torch.optim.SGD(
        head.parameters(),
        lr=lin.LR,
        momentum=lin.MOMENTUM,
        weight_decay=lin.WEIGHT_DECAY,
        nesterov=bool(lin.NESTEROV),
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(lin.MILESTONES), gamma=lin.GAMMA
    )
    return optimizer, scheduler


# =================================================================================================
# Data
# =================================================================================================
def train_transform(pretrain_cfg, cfg):
    """Training augmentation at the pretraining image size (PIL -> normalised tensor).

    ``random_resized_crop``: RandomResizedCrop(IMAGE_SIZE, LINCLS.CROP_SCALE) + flip (MoCo v2 / Mean
    Shift). ``pad_crop``: resize + centre crop to IMAGE_SIZE, then a random crop of the image padded by
    LINCLS.CROP_PADDING + flip, the usual augmentation for 32 px data, where crops of 8 % of the
    image would leave a few pixels. ``auto`` takes pad_crop below 64 px, random_resized_crop above.
    ``none`` is the test transform.
    """
    size, lin = pretrain_cfg.DATA.IMAGE_SIZE, cfg.LINCLS
    kind = lin.TRAIN_AUG
    if kind == "auto":
        kind = "pad_crop" if size < 64 else "random_resized_crop"
    if kind == "none":
        return make_test_transform(pretrain_cfg, cfg)
    if kind == "pad_crop":
        steps = [T.Resize(size), T.CenterCrop(size), T.RandomCrop(size, padding=lin.CROP_PADDING)]
    else:
        steps = [T.RandomResizedCrop(size, scale=tuple(lin.CROP_SCALE))]
    return T.Compose(
        [ToRGB()]
        + steps
        + [T.RandomHorizontalFlip(p=lin.FLIP_PROB), to_normalized_tensor(pretrain_cfg)]
    )


def make_test_transform(pretrain_cfg, cfg):
    """Deterministic transform of the test images (and of the cached / standardisation features).

    LINCLS.TEST_RESIZE True: the pretraining eval transform at IMAGE_SIZE, the size the classifier trains
    on (resize, then centre crop; DATA.EVAL_SIZE, e.g. STL-10's 96 px for the kNN monitor, is not used).
    False: CenterCrop(IMAGE_SIZE) of the native image, no resize, as the official eval_single.py (for
    STL-10 at 64 px that is the central 64 x 64 of the 96 px image, not the image shrunk to 64 px).
    """
    size = pretrain_cfg.DATA.IMAGE_SIZE
    if cfg.LINCLS.TEST_RESIZE:
        return eval_transform(pretrain_cfg, size=size)
    return T.Compose([ToRGB(), T.CenterCrop(size), to_normalized_tensor(pretrain_cfg)])


def describe_best(best_top1: float, best_epoch: Optional[int]) -> str:
    """``best top-1 76.40 at epoch 93 (selected on the test set)``: the label every report uses for the best epoch."""
    where = (
        f"at epoch {best_epoch}"
        if best_epoch
        else "at an unknown epoch (checkpoint of an earlier version)"
    )
    return f"best top-1 {best_top1:.2f} {where} (selected on the {BEST_SELECTION})"


def batchnorm_layers(module: nn.Module):
    """The BatchNorm layers of ``module`` that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


class TransformedDataset(Dataset):
    """``(transform(image), label)`` over a dataset of ``(PIL image, label)`` items."""

    def __init__(self, base: Dataset, transform):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return self.transform(image), label


# =================================================================================================
# Configs and paths
# =================================================================================================
def pretrain_config_of(checkpoint: dict, cfg):
    """The checkpoint's pretraining config; DATA.ROOT / DATA.NUM_WORKERS replaced where the lincls config sets them."""
    pretrain_cfg = config_from_yaml_text(checkpoint["config"])
    pretrain_cfg.defrost()
    if cfg.DATA.ROOT:
        pretrain_cfg.DATA.ROOT = cfg.DATA.ROOT
    if cfg.DATA.NUM_WORKERS >= 0:
        pretrain_cfg.DATA.NUM_WORKERS = cfg.DATA.NUM_WORKERS
    pretrain_cfg.freeze()
    return pretrain_cfg


def default_output_dir(
    checkpoint_path: str, cfg_name_or_path: Optional[str], which: str = "online"
) -> str:
    """``<checkpoint dir>/lincls_<cfg name>_<step>`` (``_target`` appended for the EMA target encoder).

    The step (or the file name) is part of the folder so that several checkpoints of one run can be
    evaluated side by side.
    """
    cfg_name = (
        os.path.splitext(os.path.basename(cfg_name_or_path))[0] if cfg_name_or_path else "default"
    )
    stem = os.path.splitext(os.path.basename(checkpoint_path))[0]
    match = re.fullmatch(r"checkpoint_(\d+)", stem)
    name = f"lincls_{cfg_name}_{match.group(1) if match else stem}" + (
        "_target" if which == "target" else ""
    )
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), name)


_START_OVER = "Choose another OUTPUT_DIR, or delete this file to start the evaluation again."
_UNSAFE_FIX = f"Files written by tools/lincls.py never need it. {_START_OVER}"


def load_lincls_checkpoint(path: str, map_location="cpu") -> dict:
    """A lincls_checkpoint.pth (weights_only loading), or a CheckpointError that says what is wrong."""
    state = read_checkpoint_file(path, map_location, fix=_UNSAFE_FIX, corrupt_fix=_START_OVER)
    if not isinstance(state, dict) or state.get("kind") != LINCLS_KIND:
        raise CheckpointError(
            f"'{path}' is not a linear-evaluation checkpoint (kind '{LINCLS_KIND}'); "
            f"choose another OUTPUT_DIR."
        )
    return state


# =================================================================================================
# The evaluator
# =================================================================================================
def lincls_checkpointer(output_dir: str, is_main: bool = True) -> Checkpointer:
    """The checkpoint of an evaluation folder: one LINCLS_CHECKPOINT, rewritten every epoch."""
    return Checkpointer(
        output_dir,
        lambda epoch: LINCLS_CHECKPOINT,
        re.compile(re.escape(LINCLS_CHECKPOINT) + "$"),
        load_lincls_checkpoint,
        is_main=is_main,
        log_saves=False,
    )


class LinearEvaluator(TrainerBase):
    """Loads a pretraining checkpoint, then trains and evaluates a linear classifier on its frozen encoder.

    A step is one SGD step of the classifier, an epoch ends with the test evaluation; the progress
    bar, the per-epoch record and the per-epoch checkpoint are hooks (pretrain.TrainerBase).

    With several processes (torchrun / SLURM), each extracts the features of its share of the images
    and all of them gather the whole set in data-set order; every global batch of LINCLS.BATCH_SIZE is
    split across the processes and the classifier's gradients are averaged (DDP), each process's loss
    being scaled so the average is the mean over the global batch, as with one process. With
    LINCLS.ENCODER_BN train, BatchNorm's batch statistics are those of each process's part of the batch
    and the running statistics are averaged over the processes after every epoch. Only the main
    process logs and writes files.
    """

    def __init__(
        self,
        checkpoint_path: str,
        cfg_name_or_path: Optional[str] = None,
        opts: Iterable[str] = (),
        which: str = "online",
        resume: bool = False,
    ):
        super().__init__()
        if which not in ("online", "target"):
            raise ValueError(f"which must be 'online' or 'target', got {which!r}")
        cfg_path = resolve_config_path(cfg_name_or_path, CONFIG_DIR) if cfg_name_or_path else None
        self.cfg = cfg = load_lincls_config(cfg_path, opts)
        self.checkpoint_path = checkpoint_path
        self.which = which
        self._join_processes()
        checkpoint = load_checkpoint(checkpoint_path)
        self.pretrain_cfg = pretrain_config_of(checkpoint, cfg)
        self.output_dir = cfg.OUTPUT_DIR or default_output_dir(checkpoint_path, cfg_path, which)
        self.device = comm.resolve_device(cfg.DEVICE)
        self.checkpointer = lincls_checkpointer(self.output_dir, self.is_main)
        self._prepare_output_dir(resume)
        setup_logging(self.output_dir, self.is_main)
        seed_everything(cfg.SEED)
        self._build_model(checkpoint)
        del checkpoint
        self.train_images, self.test_images = build_eval_datasets(self.pretrain_cfg, None)  # PIL
        self._check_no_single_image_batch()
        self.epoch = 0
        self.best_top1 = 0.0
        self.best_epoch: Optional[int] = 0  # 0: no epoch yet; None: unknown (an earlier version's)
        self.last = {}
        self._train_features = None
        self._test_features = None
        logger.info(self._describe())
        resume_path, saved = self.checkpointer.load_newest(self.device) if resume else (None, None)
        if saved is not None:
            self.load(resume_path, saved)
        elif cfg.LINCLS.FEATURE_NORM == "l2_standardize":
            self.head.set_statistics(self.train_features()[0])
        # the module that trains: gradients averaged over processes (parameters already equal on all)
        self.train_head = DistributedDataParallel(self.head) if self.world > 1 else self.head
        self.metrics = MetricsWriter(self.output_dir, self.is_main, tag_prefix="lincls")
        self.register_hooks(
            [
                ProgressBar(cfg.PROGRESS_BAR and self.is_main),
                EpochRecord(),
                PeriodicCheckpoint(1, 0),
            ]
        )

    # ----------------------------------------------------------------------------------- setup
    def _join_processes(self) -> None:
        """This process's place among the processes, which must split LINCLS.BATCH_SIZE evenly."""
        self.is_main, self.world, self.rank = (
            comm.is_main_process(),
            comm.get_world_size(),
            comm.get_rank(),
        )
        if self.cfg.LINCLS.BATCH_SIZE % self.world:
            raise ConfigError(
                f"LINCLS.BATCH_SIZE {self.cfg.LINCLS.BATCH_SIZE} (global) is not divisible by the "
                f"{self.world} processes; choose a multiple of {self.world}."
            )

    def _build_model(self, checkpoint: dict) -> None:
        """The frozen encoder of ``checkpoint`` on the device, the linear head and its optimizer."""
        cfg, pcfg = self.cfg, self.pretrain_cfg
        self.channels_last = bool(pcfg.MODEL.CHANNELS_LAST)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        encoder = load_encoder(checkpoint, pcfg, self.which)
        self.encoder = encoder.to(self.device, memory_format=memory_format).eval()
        self.encoder.requires_grad_(False)
        self.bn_train = cfg.LINCLS.ENCODER_BN == "train"
        self.amp_dtype = _AMP_DTYPES[cfg.LINCLS.AMP]
        self.num_classes = num_classes(pcfg)
        self.head = LinearClassifier(
            self.encoder.out_dim, self.num_classes, cfg.LINCLS.FEATURE_NORM
        ).to(self.device)
        self.optimizer, self.scheduler = build_optimizer(self.head, cfg)

    def _describe(self) -> str:
        """One line on what this evaluation does, for the log."""
        pcfg, lc = self.pretrain_cfg, self.cfg.LINCLS
        return (
            f"Linear evaluation of {self.checkpoint_path} ({self.which} encoder, {pcfg.MODEL.BACKBONE} "
            f"width {pcfg.MODEL.WIDTH}, {self.encoder.out_dim}-d features) on {pcfg.DATA.NAME}: "
            f"{len(self.train_images)} train / {len(self.test_images)} test images, "
            f"{self.num_classes} classes, "
            f"{lc.EPOCHS} epochs, lr {lc.LR:g}, milestones {list(lc.MILESTONES)}, "
            f"wd {lc.WEIGHT_DECAY:g}{', Nesterov' if lc.NESTEROV else ''}, "
            f"features {lc.FEATURE_NORM}, "
            f"{'cached features (no training augmentation)' if lc.CACHED_FEATURES else 'augmented'}, "
            f"encoder BatchNorm in {lc.ENCODER_BN} mode while training, "
            f"test {'resize + ' if lc.TEST_RESIZE else ''}centre crop, "
            f"device {self.device}; output in {self.output_dir}"
        )

    # ----------------------------------------------------------------------------------- setup
    @property
    def checkpoint_file(self) -> str:
        return os.path.join(self.output_dir, LINCLS_CHECKPOINT)

    def _prepare_output_dir(self, resume: bool) -> None:
        """Create OUTPUT_DIR with config.yaml and pretrain_config.yaml; refuse to overwrite an evaluation
        unless resuming."""
        header = (
            f"# linear evaluation of {os.path.abspath(self.checkpoint_path)} ({self.which} encoder); "
            f"data and backbone: pretrain_config.yaml\n"
        )
        files = {
            "config.yaml": header + self.cfg.dump(),
            "pretrain_config.yaml": self.pretrain_cfg.dump(),
        }
        prepare_run_dir(
            self.output_dir,
            "linear evaluation",
            self.checkpointer.newest(),
            resume,
            files,
            self.is_main,
        )
        self.checkpointer.remove_temporaries()

    def _check_no_single_image_batch(self) -> None:
        """With BatchNorm in train mode, refuse an epoch whose last batch would give a process one image.

        BatchNorm cannot take batch statistics over one image (torch raises deep inside the encoder when
        the feature map is 1 x 1, and the statistics of one sample are meaningless otherwise).
        """
        lin = self.cfg.LINCLS
        if not self.bn_train or lin.DROP_LAST:
            return
        per_process = -(
            -len(self.train_images) // self.world
        )  # DistributedSampler pads to equal shares
        if per_process % (lin.BATCH_SIZE // self.world) == 1:
            raise ConfigError(
                f"LINCLS.ENCODER_BN train: the last training batch of every epoch would hold a single image per "
                f"process ({len(self.train_images)} training images, LINCLS.BATCH_SIZE {lin.BATCH_SIZE}, "
                f"{self.world} process(es)), and BatchNorm in train mode cannot normalise one image. "
                f"Set LINCLS.DROP_LAST True, or choose another LINCLS.BATCH_SIZE."
            )

    # -------------------------------------------------------------------------------- features
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with (
            torch.no_grad(),
            torch.autocast(
                self.device.type,
                dtype=self.amp_dtype or torch.float32,
                enabled=self.amp_dtype is not None,
            ),
        ):
            return self.encoder(images).float()

    def _extract(self, dataset: Dataset, desc: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features (CPU, float32) and labels of ``dataset`` with the test transform, in data-set order.

        The encoder is in eval mode (BatchNorm with its current running statistics). Each process
        encodes its share (every world-th image); the shares are gathered on all processes.
        """
        cfg = self.cfg
        transform = make_test_transform(self.pretrain_cfg, cfg)
        loader = make_loader(
            TransformedDataset(process_share(dataset), transform),
            cfg.LINCLS.FEATURE_BATCH_SIZE,
            self.pretrain_cfg.DATA.NUM_WORKERS,
            self.device,
        )
        self.encoder.eval()
        feats, labels = [], []
        progress = progress_bar(len(loader), desc, cfg.PROGRESS_BAR and self.is_main)
        tic = time.perf_counter()
        for images, targets in loader:
            feats.append(self._encode(images))
            labels.append(torch.as_tensor(targets).to(self.device))
            progress.update(1)
        progress.close()
        out = self._gather_in_order(torch.cat(feats), torch.cat(labels).long(), len(dataset))
        logger.info(
            f"Extracted {desc} ({out[0].shape[0]} x {out[0].shape[1]}) in {time.perf_counter() - tic:.1f} s"
        )
        return out

    def _gather_in_order(
        self, feats: torch.Tensor, labels: torch.Tensor, size: int
    ) -> Tuple[torch.Tensor, ...]:
        """All processes' shares (item i of rank r is image r + i * world) put back in data-set order, on CPU."""
        if self.world == 1:
            return feats.cpu(), labels.cpu()
        order = torch.cat([torch.arange(rank, size, self.world) for rank in range(self.world)])
        gathered_feats, gathered_labels = (
            comm.all_gather_cat(feats).cpu(),
            comm.all_gather_cat(labels).cpu(),
        )
        out_feats, out_labels = torch.empty_like(gathered_feats), torch.empty_like(gathered_labels)
        out_feats[order], out_labels[order] = gathered_feats, gathered_labels
        return out_feats, out_labels

    def train_features(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training features without augmentation (cached mode and standardisation statistics)."""
        if self._train_features is None:
            self._train_features = self._extract(self.train_images, "train features")
        return self._train_features

    def test_features(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Test features with the encoder's current running statistics (cached until they move)."""
        if self._test_features is None:
            self._test_features = self._extract(self.test_images, "test features")
        return self._test_features

    # ----------------------------------------------------------------------------------- train
    def _epoch_batches(self, seed: int):
        """(number of batches, iterator of (features, labels, global batch size)) for one training epoch.

        The features and labels are this process's part of each global batch.
        """
        cfg = self.cfg
        batch_size = cfg.LINCLS.BATCH_SIZE
        if cfg.LINCLS.CACHED_FEATURES:
            feats, labels = self.train_features()
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
            chunks = order.split(batch_size)
            if cfg.LINCLS.DROP_LAST and len(chunks[-1]) < batch_size:
                chunks = chunks[:-1]
            return len(chunks), (
                (
                    feats[idx[self.rank :: self.world]],
                    labels[idx[self.rank :: self.world]],
                    len(idx),
                )
                for idx in chunks
            )
        dataset = TransformedDataset(self.train_images, train_transform(self.pretrain_cfg, cfg))
        sampler = (
            DistributedSampler(dataset, self.world, self.rank, shuffle=True, seed=seed)
            if self.world > 1
            else RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        )
        loader = make_loader(
            dataset,
            batch_size // self.world,
            self.pretrain_cfg.DATA.NUM_WORKERS,
            self.device,
            sampler=sampler,
            drop_last=cfg.LINCLS.DROP_LAST,
            seed=seed + self.rank,
        )
        return len(loader), (
            (self._encode(images), torch.as_tensor(targets), len(targets) * self.world)
            for images, targets in loader
        )

    # ------------------------------------------------------------- the loop (TrainerBase)
    @property
    def iteration(self) -> int:
        return self.epoch  # records and checkpoints are per epoch

    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.LINCLS.EPOCHS

    def epoch_batches(self):
        """The epoch's (features, labels, global batch size) batches, seeded by (SEED, epoch)."""
        cfg = self.cfg
        epoch_seed = cfg.SEED * 100_003 + self.epoch
        seed_everything(
            epoch_seed
        )  # main-process augmentation (DATA.NUM_WORKERS 0) depends only on it
        self.epoch_lr = self.optimizer.param_groups[0]["lr"]
        self.remaining_in_epoch, batches = self._epoch_batches(epoch_seed)
        self.progress_label = f"lincls epoch {self.epoch + 1}/{cfg.LINCLS.EPOCHS}"
        self.encoder.train(
            self.bn_train
        )  # ENCODER_BN train: batch statistics, running statistics move
        self.head.train()
        self.epoch_tic, self.steps_in_epoch = time.perf_counter(), 0
        self.totals = torch.zeros(
            3, dtype=torch.float64, device=self.device
        )  # loss sum, correct, seen
        return batches

    def run_step(self, batch) -> None:
        """One SGD step of the classifier on one global batch (this process's part of it)."""
        feats, labels, global_batch = batch
        feats = feats.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        logits = self.train_head(feats)
        loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        # DDP averages gradients over processes: scaled so, the result is the mean over the global batch
        loss = loss_sum * (self.world / global_batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        seen = torch.tensor(float(labels.numel()), dtype=torch.float64, device=self.device)
        correct = (logits.argmax(dim=1) == labels).sum().double()
        self.totals += torch.stack([loss_sum.detach().double(), correct, seen])
        self.steps_in_epoch += 1
        self.progress_postfix = {"loss": f"{loss.item() / self.world:.4f}"}
        self.at_epoch_end = self.steps_in_epoch == self.remaining_in_epoch

    def end_epoch(self) -> None:
        """Close the epoch: lr schedule, BN statistics, the test evaluation and the epoch's record."""
        cfg = self.cfg
        self.encoder.eval()
        loss_total, correct, seen = comm.all_reduce_sum(self.totals).tolist()
        self.scheduler.step()
        self.epoch += 1
        if self.bn_train:
            self._average_bn_statistics()
            self._test_features = (
                None  # the running statistics moved: extract the test features again
            )
        top1, top5 = self.evaluate()
        self._update_best(top1)
        self.last = {"top1": top1, "top5": top5}
        record = {
            "step": self.epoch,
            "epoch": self.epoch,
            "lr": self.epoch_lr,
            "train_loss": loss_total / max(seen, 1),
            "train_top1": 100.0 * correct / max(seen, 1),
            "test_top1": top1,
            "test_top5": top5,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "best_selected_on": BEST_SELECTION,
            "epoch_time_s": time.perf_counter() - self.epoch_tic,
        }
        self.epoch_record = record
        self.epoch_summary = (
            f"lincls epoch {self.epoch}/{cfg.LINCLS.EPOCHS}: lr {self.epoch_lr:.4g} loss "
            f"{record['train_loss']:.4f} train top-1 {record['train_top1']:.2f} | test top-1 {top1:.2f} "
            f"top-5 {top5:.2f} | {describe_best(self.best_top1, self.best_epoch)} "
            f"[{record['epoch_time_s']:.1f} s]"
        )

    def _update_best(self, top1: float) -> None:
        """Best test top-1 so far and its epoch (the first epoch that reached it)."""
        if top1 > self.best_top1 or self.best_epoch == 0:
            self.best_top1, self.best_epoch = top1, self.epoch

    @torch.no_grad()
    def _average_bn_statistics(self) -> None:
        """Running mean and variance of every BatchNorm layer averaged over the processes (no-op for one).

        Each process's statistics moved with its own part of the batches; averaging them makes every
        process test with the same statistics and makes the saved ones (rank 0's) everyone's.
        """
        if self.world == 1:
            return
        for layer in batchnorm_layers(self.encoder):
            layer.running_mean.copy_(comm.all_reduce_mean(layer.running_mean))
            layer.running_var.copy_(comm.all_reduce_mean(layer.running_var))

    @torch.no_grad()
    def evaluate(self) -> Tuple[float, float]:
        """Top-1 and top-5 accuracy (percent) on the test split; top-5 is 100 with fewer than 5 classes."""
        feats, labels = self.test_features()
        self.head.eval()
        k = min(5, self.num_classes)
        correct1 = correct5 = 0
        for start in range(0, len(labels), self.cfg.LINCLS.FEATURE_BATCH_SIZE):
            stop = start + self.cfg.LINCLS.FEATURE_BATCH_SIZE
            logits = self.head(feats[start:stop].to(self.device))
            target = labels[start:stop].to(self.device)
            topk = logits.topk(k, dim=1).indices
            correct1 += (topk[:, 0] == target).sum().item()
            correct5 += (topk == target[:, None]).any(dim=1).sum().item()
        return 100.0 * correct1 / len(labels), 100.0 * correct5 / len(labels)

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_dict(self) -> dict:
        """Everything a resumed run needs; with ENCODER_BN train also the encoder's (moved) BN buffers."""
        state = {
            "kind": LINCLS_KIND,
            "format_version": LINCLS_FORMAT_VERSION,
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "last": dict(self.last),
            "config": self.cfg.dump(),
            DERIVED_FROM_KEY: os.path.abspath(self.checkpoint_path),
            DESCRIPTION_KEY: LINCLS_DESCRIPTION,
            "which": self.which,
            "encoder_bn": self.cfg.LINCLS.ENCODER_BN,
            "rng": rng_states(),
        }
        if self.bn_train:
            state["encoder_buffers"] = {
                name: buf.detach().clone() for name, buf in self.encoder.named_buffers()
            }
        return state

    def save(self) -> str:
        return self.checkpointer.save(self.checkpoint_dict(), self.epoch)

    def load(self, path: str, state: dict) -> None:
        """Continue the evaluation saved in ``path`` (``state``: its contents)."""
        if state["which"] != self.which:
            raise CheckpointError(
                f"'{path}' evaluates the {state['which']} encoder, not the {self.which} one; "
                f"pass --which {state['which']} or choose another OUTPUT_DIR."
            )
        if os.path.abspath(self.checkpoint_path) != state[DERIVED_FROM_KEY]:
            logger.warning(
                f"Resuming a linear evaluation started on {state[DERIVED_FROM_KEY]} with "
                f"{os.path.abspath(self.checkpoint_path)}."
            )
        try:
            self.head.load_state_dict(state["head"])
        except RuntimeError as err:
            raise CheckpointError(
                f"'{path}' holds a classifier that does not fit this encoder/data set "
                f"({first_line(err)}); choose another OUTPUT_DIR."
            ) from None
        self._check_same_bn_mode(path, state)
        if self.bn_train:
            self._load_encoder_buffers(path, state["encoder_buffers"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.best_top1, self.last = (
            state["epoch"],
            state["best_top1"],
            dict(state["last"]),
        )
        self.best_epoch = state.get("best_epoch")
        restore_rng_states(state["rng"])
        logger.info(f"Resumed linear evaluation from {path} after epoch {self.epoch}")
        if self.best_epoch is None:
            logger.warning(
                f"{path} was written by an earlier version that did not record the best epoch: the best "
                f"epoch is reported as unknown (None) unless a later epoch beats its best top-1 "
                f"{self.best_top1:.2f}."
            )

    def _check_same_bn_mode(self, path: str, state: dict) -> None:
        """A run must resume with the ENCODER_BN it started with (earlier versions only had eval)."""
        saved = state.get("encoder_bn", "eval")
        if saved != self.cfg.LINCLS.ENCODER_BN:
            raise CheckpointError(
                f"'{path}' is a linear evaluation with LINCLS.ENCODER_BN {saved}, but this run sets LINCLS.ENCODER_BN "
                f"{self.cfg.LINCLS.ENCODER_BN}; resume with LINCLS.ENCODER_BN {saved}, or choose another OUTPUT_DIR "
                f"to start a new evaluation."
            )

    def _load_encoder_buffers(self, path: str, buffers: dict) -> None:
        """Put the saved BatchNorm running statistics (and batch counters) back into the encoder."""
        own = dict(self.encoder.named_buffers())
        if set(buffers) != set(own) or any(buffers[k].shape != own[k].shape for k in own):
            raise CheckpointError(
                f"'{path}' holds BatchNorm statistics that do not fit this encoder; it was made "
                f"with another pretraining checkpoint. Choose another OUTPUT_DIR."
            )
        with torch.no_grad():
            for name, buf in own.items():
                buf.copy_(buffers[name])

    # ------------------------------------------------------------------------------------- run
    def run(self) -> dict:
        """Train until LINCLS.EPOCHS (checkpointing every epoch); returns the final accuracies."""
        tic = time.perf_counter()
        try:
            self.run_loop()
            if (
                not self.last
            ):  # EPOCHS lowered below a resumed run's epoch count: evaluate what there is
                top1, top5 = self.evaluate()
                self.last = {"top1": top1, "top5": top5}
        finally:
            self.metrics.close()
        result = {
            "top1": self.last["top1"],
            "top5": self.last["top5"],
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "best_selected_on": BEST_SELECTION,
            "epochs": self.epoch,
            "output_dir": self.output_dir,
            "time_s": time.perf_counter() - tic,
        }
        logger.info(
            f"Linear evaluation done after {self.epoch} epochs: top-1 {result['top1']:.2f}, top-5 "
            f"{result['top5']:.2f} (last epoch: the result); {describe_best(self.best_top1, self.best_epoch)}"
        )
        return result


def run_linear_eval(
    checkpoint_path: str,
    cfg_name_or_path: Optional[str] = "moco_v2.yaml",
    opts: Iterable[str] = (),
    which: str = "online",
    resume: bool = False,
) -> dict:
    """Linear evaluation of a pretraining checkpoint with a protocol of configs/lincls/ (name or path).

    Returns {"top1", "top5", "best_top1", "best_epoch", "best_selected_on", "epochs", "output_dir", "time_s"}:
    "top1" / "top5" (percent, on the test split, after the last epoch) are the result; "best_top1" is the
    best epoch's top-1 and "best_epoch" its number (1-based; None when resumed from a checkpoint of an
    earlier version that did not record it), selected on the test split ("best_selected_on": "test set"),
    hence optimistic. Raises ConfigError, CheckpointError, DatasetError or FileExistsError (an OUTPUT_DIR
    holding an evaluation, without ``resume``) with a message for the user.
    """
    return LinearEvaluator(checkpoint_path, cfg_name_or_path, opts, which, resume).run()
