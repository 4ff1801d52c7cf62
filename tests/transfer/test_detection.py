"""Detectron2 transfer (transfer/detection.py, tools/train_det.py): the paper's configs, refusals of bad
configs / weights / data, few-iteration Mask R-CNN and Keypoint R-CNN fine-tuning with COCO evaluation on
the synthetic data (pretrained and random init, --eval-only, --resume), and the three mission commands.

Everything runs on the CPU in one thread: the models are tiny, and on a 2-core machine shared with other
processes several OpenMP threads per process make Detectron2 up to 10x slower.
"""

import math
import os
import pickle
import subprocess
import sys

import pytest
import torch

from pretrain.modeling.networks import ResNet
from transfer.convert import convert_backbone, extract_backbone, write_d2_pickle
from transfer.detection import (
    SYNC_BN_KEYS,
    DetectionSetupError,
    DetectionTrainer,
    check_batch_size,
    check_weights_fit,
    load_det_config,
    read_d2_pickle,
    setup,
    train_or_evaluate,
)
from transfer.synthetic_coco import write_synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
# Subprocesses: one thread (see the module docstring), no warnings noise in the output checked below.
SUB_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
# A few iterations, a short precise-BN pass and batch 2: seconds per run on the CPU.
# few iterations at a small lr: the stem stays close to the loaded weights (checked below)
FAST = [
    "SOLVER.MAX_ITER",
    "3",
    "TEST.PRECISE_BN.NUM_ITER",
    "2",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.BASE_LR",
    "0.02",
    "SOLVER.WARMUP_ITERS",
    "20",
]
# Keypoint R-CNN's default head is 8 convs of 512 channels over every detection: ~5 s per 128 px image on one
# CPU thread. Two convs of 64 channels keep the same head type and make evaluation take well under a second.
SMALL_KEYPOINT_HEAD = ["MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "(64, 64)"]
STEM_KEY = "backbone.bottom_up.stem.conv1.weight"  # where the converted stem.conv1.weight lands in the model


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _run(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or SUB_ENV,
        timeout=timeout,
    )


def _finite_ap(results, task):
    assert task in results, f"no '{task}' results in {sorted(results)}"
    ap = results[task]["AP"]
    assert isinstance(ap, float) and math.isfinite(ap) and 0.0 <= ap <= 100.0, (task, results[task])
    return ap


def _load_d2_checkpoint(path):
    return torch.load(
        path, map_location="cpu", weights_only=False
    )  # Detectron2's own checkpoint (trusted)


# ------------------------------------------------------------------------------------------ fixtures
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """The synthetic COCO data, written once (a smaller split than the default: evaluation is the slow part)."""
    root = str(tmp_path_factory.mktemp("synthetic_coco"))
    write_synthetic_coco(root, num_train=16, num_val=8)
    return root


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    """Mission command 1: a two-step MSR pretraining on the embedded digits (width 16, standard stem)."""
    out_dir = tmp_path_factory.mktemp("pretrain") / "run"
    proc = _run(
        os.path.join(TOOLS, "pretrain.py"),
        "--cfg",
        "digits_demo.yaml",
        "MODEL.WIDTH",
        "16",
        "MODEL.HIDDEN_DIM",
        "32",
        "MODEL.OUT_DIM",
        "16",
        "SOLVER.MAX_STEPS",
        "2",
        "SOLVER.BATCH_SIZE",
        "32",
        "DATA.NUM_WORKERS",
        "0",
        "KNN.PERIOD",
        "0",
        "KNN.AT_START",
        "False",
        "PROGRESS_BAR",
        "False",
        "DEVICE",
        "cpu",
        "OUTPUT_DIR",
        str(out_dir),
    )
    return {"proc": proc, "checkpoint": str(out_dir / "checkpoint_0000002.pth")}


@pytest.fixture(scope="module")
def converted(pretrain_run, tmp_path_factory):
    """Mission command 2: the pretrained online encoder converted to Detectron2's format and verified."""
    assert pretrain_run["proc"].returncode == 0, pretrain_run["proc"].stderr[-3000:]
    pkl = str(tmp_path_factory.mktemp("converted") / "msr_r18_w16.pkl")
    proc = _run(
        os.path.join(TOOLS, "convert_to_d2.py"),
        pretrain_run["checkpoint"],
        pkl,
        "--det-config",
        "synthetic_mask_rcnn.yaml",
    )
    return {"proc": proc, "pkl": pkl}


@pytest.fixture(scope="module")
def pretrained_pkl(converted):
    assert converted["proc"].returncode == 0, (
        converted["proc"].stdout[-2000:] + converted["proc"].stderr[-3000:]
    )
    return converted["pkl"]


# ---------------------------------------------------------------------------- 1. the paper's configs
PAPER = {
    "mask_rcnn_1x": dict(
        lr=0.03,
        max_iter=90000,
        steps=(60000, 80000),
        mask=True,
        keypoint=False,
        classes=80,
        train="coco_2017_train",
        test="coco_2017_val",
    ),
    "mask_rcnn_2x": dict(
        lr=0.02,
        max_iter=180000,
        steps=(120000, 160000),
        mask=True,
        keypoint=False,
        classes=80,
        train="coco_2017_train",
        test="coco_2017_val",
    ),
    "keypoint_rcnn_1x": dict(
        lr=0.05,
        max_iter=90000,
        steps=(60000, 80000),
        mask=False,
        keypoint=True,
        classes=1,
        train="keypoints_coco_2017_train",
        test="keypoints_coco_2017_val",
    ),
}
FILE_NAMES = {
    "mask_rcnn_1x": "mask_rcnn_R50_FPN_1x.yaml",
    "mask_rcnn_2x": "mask_rcnn_R50_FPN_2x.yaml",
    "keypoint_rcnn_1x": "keypoint_rcnn_R50_FPN_1x.yaml",
}


@pytest.mark.parametrize("short", sorted(PAPER))
@pytest.mark.parametrize("by", ["alias", "file name", "path"])
def test_paper_det_configs_follow_the_protocol(short, by):
    name = {
        "alias": f"{short}.yaml",
        "file name": FILE_NAMES[short],
        "path": os.path.join(ROOT, "configs", "det", FILE_NAMES[short]),
    }[by]
    expected = PAPER[short]
    cfg = load_det_config(name, world_size=8)
    assert cfg.SOLVER.BASE_LR == pytest.approx(expected["lr"])
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.REFERENCE_WORLD_SIZE == 8
    assert cfg.SOLVER.MAX_ITER == expected["max_iter"]
    assert tuple(cfg.SOLVER.STEPS) == expected["steps"]
    for key in SYNC_BN_KEYS:  # backbone, FPN, box head and mask head
        assert _get(cfg, key) == "SyncBN", key
    assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx([123.675, 116.28, 103.53])
    assert list(cfg.MODEL.PIXEL_STD) == pytest.approx([58.395, 57.12, 57.375])
    assert cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.MODEL.RESNETS.DEPTH == 50
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.TEST.PRECISE_BN.ENABLED is True
    assert cfg.MODEL.MASK_ON is expected["mask"] and cfg.MODEL.KEYPOINT_ON is expected["keypoint"]
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == expected["classes"]
    assert tuple(cfg.DATASETS.TRAIN) == (expected["train"],) and tuple(cfg.DATASETS.TEST) == (
        expected["test"],
    )
    assert cfg.MODEL.WEIGHTS == ""  # never ImageNet-supervised weights by default
    # every spelling resolves to the same file
    assert cfg.dump() == load_det_config(FILE_NAMES[short], world_size=8).dump()


@pytest.mark.parametrize("short", sorted(PAPER))
def test_one_process_turns_sync_bn_into_bn(short):
    cfg = load_det_config(f"{short}.yaml", world_size=1)
    assert [_get(cfg, key) for key in SYNC_BN_KEYS] == ["BN"] * len(SYNC_BN_KEYS)
    # nothing else changes
    multi = load_det_config(f"{short}.yaml", world_size=8)
    for key in SYNC_BN_KEYS:
        node = multi
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = "BN"
    assert cfg.dump() == multi.dump()


def test_overrides_apply_on_top_of_the_file():
    cfg = load_det_config(
        "mask_rcnn_1x.yaml", ["SOLVER.BASE_LR", "0.06", "SOLVER.MAX_ITER", "10"], world_size=8
    )
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.06) and cfg.SOLVER.MAX_ITER == 10
    assert cfg.SOLVER.STEPS == (60000, 80000)


# ---------------------------------------------------------------------------------- 2. config errors
def test_batch_check_accepts_exactly_what_detectron2_can_use():
    """check_batch_size passes iff Detectron2's rescaling does not assert and the batch splits evenly."""
    cfg = load_det_config("mask_rcnn_1x.yaml")
    for reference in (0, 1, 2, 4, 8):
        for world in (1, 2, 4, 8):
            for batch in range(1, 33):
                cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.REFERENCE_WORLD_SIZE = batch, reference
                try:
                    scaled = DetectionTrainer.auto_scale_workers(cfg, world).SOLVER.IMS_PER_BATCH
                    usable = scaled % world == 0
                except AssertionError:
                    usable = False
                try:
                    check_batch_size(cfg, world)
                    accepted = True
                except DetectionSetupError:
                    accepted = False
                assert accepted == usable, (batch, reference, world)


def test_batch_check_names_both_values_and_both_fixes():
    cfg = load_det_config("mask_rcnn_1x.yaml", ["SOLVER.IMS_PER_BATCH", "2"])
    with pytest.raises(DetectionSetupError) as err:
        check_batch_size(cfg, 1, config_batch=16)
    message = str(err.value)
    assert "IMS_PER_BATCH 2 is not a multiple of SOLVER.REFERENCE_WORLD_SIZE 8" in message
    assert "(16 in this config)" in message and "SOLVER.REFERENCE_WORLD_SIZE 0" in message
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 0  # the second fix: the batch of 2 is used as given
    check_batch_size(cfg, 1)


def test_unknown_config_name_suggests_the_close_one():
    with pytest.raises(
        DetectionSetupError,
        match=r"mask_rcnn_1x\.yml.*not found.*Did you mean 'mask_rcnn_1x\.yaml'",
    ):
        load_det_config("mask_rcnn_1x.yml")


def test_misspelt_override_key_names_the_valid_one():
    with pytest.raises(
        DetectionSetupError, match=r"SOLVER\.BASE_LRR.*Did you mean 'SOLVER\.BASE_LR'"
    ):
        load_det_config("mask_rcnn_1x.yaml", ["SOLVER.BASE_LRR", "0.1"])
    with pytest.raises(
        DetectionSetupError, match=r"KEY VALUE pairs.*'SOLVER\.MAX_ITER' has no value"
    ):
        load_det_config("mask_rcnn_1x.yaml", ["SOLVER.BASE_LR", "0.1", "SOLVER.MAX_ITER"])


def test_missing_weights_file_is_refused(tmp_path):
    missing = str(tmp_path / "nowhere" / "out.pkl")
    cfg = load_det_config("synthetic_mask_rcnn.yaml", ["MODEL.WEIGHTS", missing])
    with pytest.raises(
        DetectionSetupError, match=r"MODEL\.WEIGHTS '.*out\.pkl' does not exist.*convert_to_d2\.py"
    ):
        check_weights_fit(cfg)


def test_weights_of_another_width_are_refused(tmp_path, synthetic_root):
    pkl = str(tmp_path / "r18_w8.pkl")
    write_d2_pickle(
        convert_backbone(
            extract_backbone(ResNet("resnet18", width=8, stem="imagenet").state_dict())
        ),
        pkl,
    )
    opts = [
        "MODEL.WEIGHTS",
        pkl,
        "MSR.SYNTHETIC_ROOT",
        synthetic_root,
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    ]
    with pytest.raises(
        DetectionSetupError,
        match=r"does not fit the backbone.*STEM_OUT_CHANNELS 16.*"
        r"stem of 8 channels.*shape mismatch",
    ):
        setup("synthetic_mask_rcnn.yaml", opts)
    # the same weights pass once the config describes their architecture
    check_weights_fit(
        load_det_config(
            "synthetic_mask_rcnn.yaml",
            opts + ["MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "8"],
        )
    )


def test_missing_coco_is_reported_with_the_layout(tmp_path):
    empty = tmp_path / "datasets"
    empty.mkdir()
    proc = _run(
        os.path.join(TOOLS, "train_det.py"),
        "--config",
        "mask_rcnn_1x.yaml",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
        env={**SUB_ENV, "DETECTRON2_DATASETS": str(empty)},
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"{empty}/coco/annotations/instances_train2017.json, which does not exist" in proc.stderr
    for line in (
        "$DETECTRON2_DATASETS/coco/",
        "annotations/instances_{train,val}2017.json",
        "annotations/person_keypoints_{train,val}2017.json",
        "train2017/*.jpg",
        "val2017/*.jpg",
        "set DETECTRON2_DATASETS",
    ):
        assert line in proc.stderr, line
    assert not os.path.exists(tmp_path / "out" / "model_final.pth")


# -------------------------------------------------------- 3. few-iteration fine-tuning and COCO evaluation
def _stem_distance(output_dir, pkl):
    """Max |difference| between the fine-tuned stem and the converted pretrained stem."""
    final = _load_d2_checkpoint(os.path.join(output_dir, "model_final.pth"))
    return (
        (final["model"][STEM_KEY].float() - read_d2_pickle(pkl)["stem.conv1.weight"])
        .abs()
        .max()
        .item()
    )


@pytest.mark.parametrize(
    "config, tasks, weights",
    [
        ("synthetic_mask_rcnn.yaml", ("bbox", "segm"), "random"),
        ("synthetic_keypoint_rcnn.yaml", ("bbox", "keypoints"), "pretrained"),
        ("synthetic_keypoint_rcnn.yaml", ("bbox", "keypoints"), "random"),
    ],
)
def test_few_iterations_train_and_coco_evaluate(
    tmp_path, synthetic_root, pretrained_pkl, config, tasks, weights
):
    out = str(tmp_path / "out")
    cfg = setup(
        config,
        [
            "MODEL.WEIGHTS",
            pretrained_pkl if weights == "pretrained" else "",
            "MSR.SYNTHETIC_ROOT",
            synthetic_root,
            "OUTPUT_DIR",
            out,
        ]
        + FAST
        + (SMALL_KEYPOINT_HEAD if "keypoints" in tasks else []),
    )
    results = train_or_evaluate(cfg)
    assert set(results) == set(tasks)
    for task in tasks:
        _finite_ap(results, task)
    assert _load_d2_checkpoint(os.path.join(out, "model_final.pth"))["iteration"] == 2
    # pretrained: the backbone starts from the converted weights (3 warm-up steps barely move them)
    distance = _stem_distance(out, pretrained_pkl)
    assert (distance < 0.01) if weights == "pretrained" else (distance > 0.1), distance


def test_mask_rcnn_from_pretrained_weights_then_eval_only_and_resume(
    tmp_path, synthetic_root, pretrained_pkl, monkeypatch
):
    run = str(tmp_path / "run")
    common = ["MSR.SYNTHETIC_ROOT", synthetic_root] + FAST
    cfg = setup(
        "synthetic_mask_rcnn.yaml", ["MODEL.WEIGHTS", pretrained_pkl, "OUTPUT_DIR", run] + common
    )
    trained = train_or_evaluate(cfg)
    assert set(trained) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        _finite_ap(trained, task)
    final = os.path.join(run, "model_final.pth")
    assert _load_d2_checkpoint(final)["iteration"] == 2
    assert _stem_distance(run, pretrained_pkl) < 0.01

    # --eval-only on the model just written: the same predictions as the evaluation at the end of training
    evaluated = str(tmp_path / "eval")
    cfg = setup(
        "synthetic_mask_rcnn.yaml", ["MODEL.WEIGHTS", final, "OUTPUT_DIR", evaluated] + common
    )
    again = train_or_evaluate(cfg, eval_only=True)
    assert set(again) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert _finite_ap(again, task) == pytest.approx(trained[task]["AP"])
    predictions = [
        os.path.join(d, "inference", "coco_instances_results.json") for d in (run, evaluated)
    ]
    with open(predictions[0]) as a, open(predictions[1]) as b:
        first, second = a.read(), b.read()
    assert len(first) > 2 and first == second
    assert not os.path.exists(
        os.path.join(evaluated, "model_final.pth")
    )  # evaluation trains nothing

    # --resume: continues from OUTPUT_DIR's last checkpoint (iteration 2) up to the new MAX_ITER
    iterations = []
    original = DetectionTrainer.run_step

    def recording_run_step(self):
        iterations.append(self.iter)
        return original(self)

    monkeypatch.setattr(DetectionTrainer, "run_step", recording_run_step)
    cfg = setup(
        "synthetic_mask_rcnn.yaml",
        ["MODEL.WEIGHTS", pretrained_pkl, "OUTPUT_DIR", run] + common + ["SOLVER.MAX_ITER", "5"],
    )
    resumed = train_or_evaluate(cfg, resume=True)
    assert iterations == [3, 4]
    assert _load_d2_checkpoint(final)["iteration"] == 4
    for task in ("bbox", "segm"):
        _finite_ap(resumed, task)


# ---------------------------------------------------------------------------- 4. the mission commands
def test_pretrain_command_writes_a_standard_stem_checkpoint(pretrain_run):
    proc = pretrain_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done: step 2" in proc.stdout
    state = torch.load(pretrain_run["checkpoint"], map_location="cpu", weights_only=True)
    assert state["step"] == 2
    assert tuple(state["model"]["encoder.conv1.weight"].shape) == (16, 3, 7, 7)


def test_convert_command_verifies_the_conversion(pretrain_run, converted):
    proc = converted["proc"]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "(resnet18, width 16)" in proc.stdout and "Verification passed" in proc.stdout
    weights = read_d2_pickle(converted["pkl"])
    source = torch.load(pretrain_run["checkpoint"], map_location="cpu", weights_only=True)["model"]
    assert torch.equal(weights["stem.conv1.weight"], source["encoder.conv1.weight"])
    assert torch.equal(
        weights["res5.1.conv2.norm.running_var"], source["encoder.layer4.1.bn2.running_var"]
    )
    with open(converted["pkl"], "rb") as handle:
        assert pickle.load(handle)["matching_heuristics"] is True


def test_train_det_command_fine_tunes_and_prints_coco_tables(
    tmp_path, synthetic_root, pretrained_pkl
):
    out = tmp_path / "det"
    proc = _run(
        os.path.join(TOOLS, "train_det.py"),
        "--config",
        "synthetic_mask_rcnn.yaml",
        "MODEL.WEIGHTS",
        pretrained_pkl,
        "OUTPUT_DIR",
        str(out),
        "MSR.SYNTHETIC_ROOT",
        synthetic_root,
        "SOLVER.MAX_ITER",
        "2",
        "TEST.PRECISE_BN.NUM_ITER",
        "2",
        "SOLVER.IMS_PER_BATCH",
        "2",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        (out / "model_final.pth").is_file()
        and (out / "config.yaml").is_file()
        and (out / "log.txt").is_file()
    )
    assert _load_d2_checkpoint(str(out / "model_final.pth"))["iteration"] == 1
    for task in ("bbox", "segm"):
        assert f"Evaluation results for {task}:" in proc.stdout
        assert f"copypaste: Task: {task}" in proc.stdout
    assert proc.stdout.count("|  AP   |  AP50  |  AP75  |  APs  |  APm  |  APl  |") >= 2
    assert "Traceback" not in proc.stderr


def test_a_model_without_detections_scores_zero_for_each_of_its_tasks():
    from transfer.detection import ModelCOCOEvaluator, evaluation_tasks

    cfg = load_det_config("synthetic_keypoint_rcnn.yaml", world_size=1)
    assert evaluation_tasks(cfg) == ("bbox", "keypoints")
    assert evaluation_tasks(load_det_config("mask_rcnn_1x.yaml", world_size=1)) == ("bbox", "segm")
    evaluator = ModelCOCOEvaluator.__new__(
        ModelCOCOEvaluator
    )  # only the result derivation is exercised
    import logging

    evaluator._logger = logging.getLogger("test")
    results = evaluator._derive_coco_results(None, "keypoints")
    assert results == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APm": 0.0, "APl": 0.0}
