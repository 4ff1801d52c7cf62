"""Detectron2 side of the transfer: configs, an any-width ResNet backbone, weight checks and the trainer.

Importing this module applies :mod:`transfer.d2compat` (a no-op on a complete Detectron2 install).
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Dict, Iterable, List, Optional

import torch

from . import d2compat

d2compat.apply()

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.engine import DefaultTrainer  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import BACKBONE_REGISTRY  # noqa: E402
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool  # noqa: E402
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet, build_resnet_backbone  # noqa: E402

from pretrain import (  # noqa: E402
    CHECKPOINT_KIND,
    UserError,
    all_keys,
    describe_derived,
    ensure_output_dir,
    torch_load_quietly,
    unreadable_message,
)

from .convert import Backbone, source_encoder  # noqa: E402
from .safe_pickle import load_weights_pickle  # noqa: E402

logger = logging.getLogger(
    "detectron2.msr_transfer"
)  # under Detectron2's logger: printed and saved

DET_CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "det"
)
CONFIG_ALIASES = {
    "mask_rcnn_1x.yaml": "mask_rcnn_R50_FPN_1x.yaml",
    "mask_rcnn_2x.yaml": "mask_rcnn_R50_FPN_2x.yaml",
    "keypoint_rcnn_1x.yaml": "keypoint_rcnn_R50_FPN_1x.yaml",
}
SYNC_BN_KEYS = (
    "MODEL.RESNETS.NORM",
    "MODEL.FPN.NORM",
    "MODEL.ROI_BOX_HEAD.NORM",
    "MODEL.ROI_MASK_HEAD.NORM",
)
DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}


class DetectionSetupError(UserError, ValueError):
    """A detection config, data set or weights problem the user must fix; the message says how."""


# What to do instead of passing weights that cannot be loaded safely.
WEIGHTS_FIX = (
    "Convert the pretrained checkpoint with tools/convert_to_d2.py CHECKPOINT OUT.pkl (it writes plain "
    "numpy arrays) and pass OUT.pkl as MODEL.WEIGHTS."
)
REMOTE_PREFIXES = ("detectron2://", "http://", "https://", "catalog://")


# ---------------------------------------------------------------------------------------------- configs
def add_transfer_config(cfg: CfgNode) -> None:
    """Keys this project adds to Detectron2's config."""
    cfg.MSR = CfgNode()
    # Folder of the synthetic COCO-format data set used by DATASETS named synthetic_coco_* (written if missing).
    cfg.MSR.SYNTHETIC_ROOT = "datasets/synthetic_coco"


def resolve_det_config(name: str) -> str:
    """A path, a file name in configs/det/, or a short alias such as mask_rcnn_1x.yaml."""
    if os.path.isfile(name):
        return name
    base = CONFIG_ALIASES.get(name, CONFIG_ALIASES.get(name + ".yaml", name))
    for candidate in (
        os.path.join(DET_CONFIG_DIR, base),
        os.path.join(DET_CONFIG_DIR, base + ".yaml"),
    ):
        if os.path.isfile(candidate):
            return candidate
    available = sorted(
        list(CONFIG_ALIASES) + [f for f in os.listdir(DET_CONFIG_DIR) if not f.startswith("Base-")]
    )
    close = difflib.get_close_matches(name, available, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise DetectionSetupError(
        f"Detection config '{name}' not found as a path or in configs/det/.{hint} "
        f"Available: {', '.join(available)}."
    )


def _merge_overrides(cfg: CfgNode, opts: List[str]) -> None:
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError, ValueError) as err:
        text = str(err)
        key = next((k for k in opts[0::2] if k in text), None)
        if key is None:
            raise DetectionSetupError(f"Bad override: {text.strip()}") from None
        keys = all_keys(cfg)
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DetectionSetupError(f"Bad override '{key}': {text.strip()}.{hint}") from None


def load_det_config(name: str, opts: Iterable[str] = (), world_size: int = 1) -> CfgNode:
    """Detectron2 defaults + our keys + the config file + overrides; SyncBN becomes BN on one process."""
    cfg = get_cfg()
    add_transfer_config(cfg)
    cfg.merge_from_file(resolve_det_config(name))
    opts = list(opts)
    if len(opts) % 2:
        raise DetectionSetupError(f"Overrides come as KEY VALUE pairs; '{opts[-1]}' has no value.")
    _merge_overrides(cfg, opts)
    if world_size == 1:
        for key in sync_bn_keys(cfg):
            _set(cfg, key, "BN")
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def check_batch_size(cfg: CfgNode, world_size: int, config_batch: Optional[int] = None) -> None:
    """Refuse, before anything is built, a SOLVER.IMS_PER_BATCH that Detectron2 cannot use
    (``config_batch``: the config file's own batch, named in the message).

    With SOLVER.REFERENCE_WORLD_SIZE R (not 0) and a world size other than R, Detectron2 rescales the
    batch, learning rate and schedule by world_size / R (DefaultTrainer.auto_scale_workers), which
    asserts that R divides the batch; otherwise the batch is split as is over the processes.
    """
    batch, reference = cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.REFERENCE_WORLD_SIZE
    if reference not in (0, world_size):
        if batch % reference == 0:
            return
        processes = f"{world_size} process{'es' if world_size > 1 else ''}"
        own = f" ({config_batch} in this config)" if config_batch is not None else ""
        raise DetectionSetupError(
            f"SOLVER.IMS_PER_BATCH {batch} is not a multiple of SOLVER.REFERENCE_WORLD_SIZE {reference}: "
            f"the config's batch is meant for {reference} processes, and Detectron2 rescales the batch, "
            f"learning rate and schedule to the {processes} used here, which needs {reference} to "
            f"divide the batch. Either leave SOLVER.IMS_PER_BATCH at the config's reference batch{own}, "
            f"which is then rescaled for {processes}, or pass SOLVER.REFERENCE_WORLD_SIZE 0 to use the "
            f"batch of {batch} as given, with the config's learning rate and schedule unchanged."
        )
    if batch % world_size:
        raise DetectionSetupError(
            f"SOLVER.IMS_PER_BATCH {batch} does not split over the {world_size} processes; choose a "
            f"multiple of {world_size}."
        )


def sync_bn_keys(cfg: CfgNode) -> List[str]:
    """The norm keys of ``cfg`` that ask for SyncBN."""
    return [key for key in SYNC_BN_KEYS if _get(cfg, key) == "SyncBN"]


def _get(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg: CfgNode, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def backbone_shape_opts(depth: str, width: int) -> List[str]:
    """KEY VALUE overrides that make MODEL.RESNETS a torchvision-style ``depth`` with ``width`` stem channels."""
    res2 = width * (4 if DEPTHS[depth] >= 50 else 1)
    return [
        "MODEL.RESNETS.DEPTH",
        str(DEPTHS[depth]),
        "MODEL.RESNETS.STEM_OUT_CHANNELS",
        str(width),
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        str(res2),
        "MODEL.RESNETS.WIDTH_PER_GROUP",
        str(width),
        "MODEL.RESNETS.NUM_GROUPS",
        "1",
    ]


# --------------------------------------------------------------------------------------------- backbone
def build_any_width_resnet(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """Detectron2's ResNet; for R18/R34 also with a stem width other than 64 (CPU-sized networks).

    Detectron2's own builder insists on 64 channels for basic-block ResNets; the blocks themselves
    work with any width, so build the stages here with the same rules (stride 2 from res3 on).
    """
    depth = cfg.MODEL.RESNETS.DEPTH
    if depth >= 50 or cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 64:
        return build_resnet_backbone(cfg, input_shape)
    norm = cfg.MODEL.RESNETS.NORM
    in_channels = cfg.MODEL.RESNETS.STEM_OUT_CHANNELS
    stem = BasicStem(in_channels=input_shape.channels, out_channels=in_channels, norm=norm)
    out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    stages = []
    for index, blocks in enumerate({18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]):
        first_stride = 1 if index == 0 else 2
        stages.append(
            ResNet.make_stage(
                block_class=BasicBlock,
                num_blocks=blocks,
                stride_per_block=[first_stride] + [1] * (blocks - 1),
                in_channels=in_channels,
                out_channels=out_channels,
                norm=norm,
            )
        )
        in_channels, out_channels = out_channels, out_channels * 2
    return ResNet(
        stem,
        stages,
        out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )


def build_msr_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """ResNet-FPN like Detectron2's build_resnet_fpn_backbone, over :func:`build_any_width_resnet`."""
    return FPN(
        bottom_up=build_any_width_resnet(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


if "build_msr_resnet_fpn_backbone" not in BACKBONE_REGISTRY:
    BACKBONE_REGISTRY.register(build_msr_resnet_fpn_backbone)


# ------------------------------------------------------------------------------------ weights checks
def read_d2_pickle(path: str) -> Dict[str, torch.Tensor]:
    """The 'model' entry of a converted pickle, as tensors (restricted unpickling: numpy arrays only)."""
    data = load_weights_pickle(path, WEIGHTS_FIX)
    if not isinstance(data, dict) or "model" not in data:
        raise DetectionSetupError(
            f"'{path}' is not a Detectron2 weights pickle (no 'model' entry). Convert a "
            f"pretraining checkpoint with tools/convert_to_d2.py first."
        )
    return {k: torch.as_tensor(v) for k, v in data["model"].items()}


def verify_conversion(
    backbone: Backbone,
    d2_weights: Dict[str, torch.Tensor],
    det_config: str = "mask_rcnn_1x.yaml",
    image_size: int = 96,
    seed: int = 0,
) -> Dict[str, float]:
    """Max |difference| between Detectron2's res2..res5 (loaded with ``d2_weights``) and the source layer1..4.

    Both networks run in eval mode (BatchNorm with running statistics) on the same random input.
    """
    cfg = load_det_config(
        det_config, backbone_shape_opts(backbone.depth, backbone.width), world_size=1
    )
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    d2_net = build_any_width_resnet(cfg, ShapeSpec(channels=3)).eval()
    missing, unexpected = d2_net.load_state_dict(d2_weights, strict=False)
    if missing or unexpected:
        raise DetectionSetupError(
            f"Converted weights do not fit Detectron2's {backbone.depth}: missing "
            f"{missing[:10]}, unexpected {unexpected[:10]}."
        )
    source = source_encoder(backbone)
    images = torch.randn(
        2, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        ours = source.forward_stages(images)
        theirs = d2_net(images)
    return {
        f"res{i + 2}": (theirs[f"res{i + 2}"] - ours[f"layer{i + 1}"]).abs().max().item()
        for i in range(4)
    }


def read_torch_weights(path: str):
    """``torch.load(weights_only=True)`` of a weights file, or a DetectionSetupError saying why it is refused."""
    try:
        return torch_load_quietly(path)
    except Exception as err:  # noqa: BLE001 (needs unsafe unpickling, corrupt, or not a torch file)
        raise DetectionSetupError(unreadable_message(path, err, WEIGHTS_FIX)) from None


def refuse_project_checkpoints(path: str, state) -> None:
    """Refuse this project's pretraining checkpoints and those made from them (e.g. linear evaluation):
    Detectron2 would skip all their keys."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == CHECKPOINT_KIND:
        raise DetectionSetupError(
            f"MODEL.WEIGHTS '{path}' is an MSR pretraining checkpoint (kind '{CHECKPOINT_KIND}'), not Detectron2 "
            f"weights: Detectron2 would match none of its keys and silently train from random initialisation. "
            f"Convert it first: tools/convert_to_d2.py {path} OUT.pkl, then pass OUT.pkl as MODEL.WEIGHTS."
        )
    derived = describe_derived(state)
    if derived is not None:
        raise DetectionSetupError(
            f"MODEL.WEIGHTS '{path}' is {derived[0]}, not Detectron2 weights. Convert the pretraining checkpoint "
            f"it was made from ({derived[1]}) with tools/convert_to_d2.py CHECKPOINT OUT.pkl and pass OUT.pkl "
            f"as MODEL.WEIGHTS."
        )


def check_weights_fit(cfg: CfgNode) -> None:
    """Refuse MODEL.WEIGHTS that are missing, unsafe to load, of another kind or of another backbone shape.

    Detectron2 would run code from an unsafe pickle, and silently skip weights whose keys or shapes
    do not match (training from random initialisation instead).
    """
    path = cfg.MODEL.WEIGHTS
    if not path or path.startswith(REMOTE_PREFIXES):
        return
    if not os.path.isfile(path):
        raise DetectionSetupError(
            f"MODEL.WEIGHTS '{path}' does not exist. Convert a pretraining checkpoint "
            f"with tools/convert_to_d2.py CHECKPOINT OUT.pkl and pass OUT.pkl."
        )
    if not path.endswith(".pkl"):
        refuse_project_checkpoints(path, read_torch_weights(path))
        return
    weights = read_d2_pickle(path)
    expected = {
        k: tuple(v.shape)
        for k, v in build_any_width_resnet(cfg, ShapeSpec(channels=3)).state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    bad = [
        f"{k} {tuple(weights[k].shape)} vs {shape}"
        for k, shape in expected.items()
        if k in weights and tuple(weights[k].shape) != shape
    ]
    missing = [k for k in expected if k not in weights]
    if bad or missing:
        width = weights.get("stem.conv1.weight")
        found = (
            f" (the weights have a stem of {width.shape[0]} channels)" if width is not None else ""
        )
        raise DetectionSetupError(
            f"MODEL.WEIGHTS '{path}' does not fit the backbone of this config (MODEL.RESNETS.DEPTH "
            f"{cfg.MODEL.RESNETS.DEPTH}, STEM_OUT_CHANNELS {cfg.MODEL.RESNETS.STEM_OUT_CHANNELS}, RES2_OUT_CHANNELS "
            f"{cfg.MODEL.RESNETS.RES2_OUT_CHANNELS}){found}: {len(bad)} shape mismatch(es) {bad[:3]}, "
            f"{len(missing)} missing key(s) {missing[:3]}. Detectron2 would silently skip these; set "
            f"MODEL.RESNETS to the pretrained architecture."
        )


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer without unsafe unpickling.

    Detectron2 reads .pkl files with ``pickle.load`` (and .pth files with torch.load, unsafe by
    default before torch 2.6). Here .pkl files go through the restricted unpickler of
    transfer/safe_pickle.py and everything else through ``torch.load(weights_only=True)``; the
    formats Detectron2 understands (its model zoo, Caffe2 blobs, pycls, its own checkpoints) are
    returned in the same layout as by Detectron2.
    """

    def _load_file(self, filename: str) -> dict:
        if filename.endswith(".pkl"):
            data = load_weights_pickle(filename, WEIGHTS_FIX)
            if not isinstance(data, dict):
                raise DetectionSetupError(
                    f"'{filename}' holds a {type(data).__name__}, not Detectron2 weights (a "
                    f"dict). {WEIGHTS_FIX}"
                )
            return _d2_pickle_layout(data)
        loaded = read_torch_weights(filename)
        if filename.endswith(".pyth"):  # pycls
            state = {
                k: v
                for k, v in loaded["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        refuse_project_checkpoints(filename, loaded)
        return loaded if "model" in loaded else {"model": loaded}


def _d2_pickle_layout(data: dict) -> dict:
    """Detectron2's reading of a .pkl: its model-zoo layout as is, Caffe2 / Detectron1 blobs converted."""
    if "model" in data and "__author__" in data:
        return data
    if "blobs" in data:  # detection models of Detectron1 have "blobs", ImageNet models do not
        data = data["blobs"]
    data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


# -------------------------------------------------------------------------------------------- trainer
def evaluation_tasks(cfg: CfgNode) -> tuple:
    """The COCO tasks of the model's heads: boxes always, masks and keypoints when switched on."""
    return (
        ("bbox",)
        + (("segm",) if cfg.MODEL.MASK_ON else ())
        + (("keypoints",) if cfg.MODEL.KEYPOINT_ON else ())
    )


class ModelCOCOEvaluator(COCOEvaluator):
    """COCO evaluation of every task of the model; a model with no detection at all scores AP 0, not NaN.

    Detectron2 infers the tasks from the predictions and reports NaN when there are none, so an
    undertrained model would silently lose its mask or keypoint row.
    """

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None:
            logger.warning(f"No {iou_type} detections at all: every {iou_type} AP is 0.")
            return {metric: 0.0 for metric in results}
        return results


class DetectionTrainer(DefaultTrainer):
    """Detectron2's trainer with COCO evaluation (the pure-Python path when the compiled ops are absent).

    Its checkpointer loads MODEL.WEIGHTS and resumed checkpoints without unsafe unpickling.
    """

    def __init__(self, cfg: CfgNode):
        super().__init__(cfg)
        # DefaultTrainer builds a DetectionCheckpointer and hands it to its hooks; the subclass only
        # changes how files are read, so switching the class keeps that one object everywhere.
        self.checkpointer.__class__ = SafeDetectionCheckpointer

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return ModelCOCOEvaluator(
            dataset_name,
            tasks=evaluation_tasks(cfg),
            output_dir=output_folder,
            use_fast_impl=d2compat.has_compiled_ops(),
            kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
        )


# ------------------------------------------------------------------------------------------ data sets
COCO_LAYOUT = (
    "$DETECTRON2_DATASETS/coco/  (DETECTRON2_DATASETS defaults to ./datasets)\n"
    "  annotations/instances_{train,val}2017.json\n"
    "  annotations/person_keypoints_{train,val}2017.json\n"
    "  train2017/*.jpg\n  val2017/*.jpg"
)


def prepare_datasets(cfg: CfgNode) -> None:
    """Register the synthetic data (writing it on first use) and check that other data sets are on disk."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if any(name.startswith("synthetic_coco_") for name in names):
        from .synthetic_coco import register_synthetic_coco, write_synthetic_coco

        root = cfg.MSR.SYNTHETIC_ROOT
        if not os.path.isfile(os.path.join(root, "annotations", "person_keypoints_val2017.json")):
            logger.info(f"Writing the synthetic COCO-format data set to {root}")
            write_synthetic_coco(root)
        register_synthetic_coco(root)
    for name in names:
        if name not in DatasetCatalog.list():
            close = difflib.get_close_matches(name, DatasetCatalog.list(), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise DetectionSetupError(f"Data set '{name}' is not registered with Detectron2.{hint}")
        meta = MetadataCatalog.get(name)
        for attribute in ("json_file", "image_root"):
            path = meta.get(attribute, None)
            if path and not os.path.exists(path):
                raise DetectionSetupError(
                    f"Data set '{name}' needs {path}, which does not exist. Detectron2 reads COCO from:\n"
                    f"{COCO_LAYOUT}\nDownload COCO 2017 from https://cocodataset.org (train/val images and "
                    f"annotations), unpack it in that layout and set DETECTRON2_DATASETS to the folder holding coco/."
                )


# --------------------------------------------------------------------------------------------- running
def setup(config: str, opts: Iterable[str] = (), args=None) -> CfgNode:
    """The frozen config for this process, with logging set up, data sets registered and weights checked.

    The cheap checks (OUTPUT_DIR writable, MODEL.WEIGHTS safe and of the right kind) come first, so a
    bad input is reported before anything is logged, written or built.
    """
    from detectron2.engine import default_setup
    from detectron2.utils import comm

    asked_sync_bn = sync_bn_keys(load_det_config(config, opts, world_size=2))
    cfg = load_det_config(config, opts, world_size=comm.get_world_size())
    own_batch = load_det_config(config).SOLVER.IMS_PER_BATCH
    check_batch_size(cfg, comm.get_world_size(), own_batch)
    cfg.freeze()
    if comm.is_main_process():
        ensure_output_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR of the detection run")
    check_weights_fit(cfg)
    if cfg.MODEL.DEVICE == "cpu":
        # Denormal floats (gradients of tiny values) make x86 CPUs 5x slower on these models; flush them to 0.
        torch.set_flush_denormal(True)
    if args is not None:
        default_setup(cfg, args)
    if asked_sync_bn and comm.get_world_size() == 1:
        logger.warning(
            f"One process: SyncBN needs several, so {', '.join(asked_sync_bn)} use BN instead "
            f"(batch statistics of this process only, which is what SyncBN over one process computes)."
        )
    prepare_datasets(cfg)
    return cfg


def train_or_evaluate(cfg: CfgNode, resume: bool = False, eval_only: bool = False) -> dict:
    """Fine-tune (resuming from OUTPUT_DIR's last checkpoint when asked) or only evaluate; returns COCO results."""
    if eval_only:
        model = DetectionTrainer.build_model(cfg)
        SafeDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=resume
        )
        return DetectionTrainer.test(cfg, model)
    trainer = DetectionTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    results = (
        trainer.train()
    )  # Detectron2 returns the results only when TEST.EXPECTED_RESULTS is set
    return results if results is not None else getattr(trainer, "_last_eval_results", {})
