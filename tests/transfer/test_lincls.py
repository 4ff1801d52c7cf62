"""Linear evaluation: protocols, lr schedule, feature normalisation, frozen encoder, encoder BN in train mode,
resume, last-vs-best reporting, errors, CLI."""

import copy
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import TINY_CPU_RUN, overrides
from PIL import Image

from pretrain.cli import EXIT_USER_ERROR, run_main
from pretrain.config import ConfigError, load_config
from pretrain.engine.checkpoint import CheckpointError, load_checkpoint, save_atomic
from pretrain.engine.knn import load_encoder
from pretrain.engine.trainer import Pretrainer
from transfer.lincls import (
    LINCLS_CHECKPOINT,
    LINCLS_KIND,
    LinearClassifier,
    LinearEvaluator,
    build_optimizer,
    default_output_dir,
    describe_best,
    make_test_transform,
    pretrain_config_of,
    run_linear_eval,
    train_transform,
)
from transfer.lincls_config import CONFIG_DIR, load_lincls_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_PRETRAIN = overrides(
    TINY_CPU_RUN,
    {"SOLVER.EPOCHS": 1, "SOLVER.MAX_STEPS": 2, "KNN.PERIOD": 0, "PROGRESS_BAR": False},
)
QUIET = ["PROGRESS_BAR", "False", "DEVICE", "cpu", "DATA.NUM_WORKERS", "0"]
# The official protocol (encoder BN in train mode, Nesterov, drop_last) shortened to 3 epochs with a milestone at 2:
# batch 512 over 1347 images = 2 training batches per epoch (the last 323 images dropped), 450 test images = 2 batches.
BN_TRAIN = QUIET + [
    "LINCLS.EPOCHS",
    "3",
    "LINCLS.MILESTONES",
    "[2]",
    "LINCLS.LR",
    "0.1",
    "LINCLS.BATCH_SIZE",
    "512",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 2-step pretraining checkpoint of a width-4 ResNet-18 on digits (seconds on a CPU)."""
    output_dir = tmp_path_factory.mktemp("pretrain")
    Pretrainer(
        load_config("digits_demo.yaml", TINY_PRETRAIN + ["OUTPUT_DIR", str(output_dir)])
    ).train()
    return str(output_dir / "checkpoint_0000002.pth")


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


# --------------------------------------------------------------------------------------- configs
def test_shipped_protocols_have_the_paper_values():
    moco = load_lincls_config("moco_v2.yaml").LINCLS
    assert (moco.EPOCHS, moco.LR, moco.MOMENTUM, moco.WEIGHT_DECAY, moco.BATCH_SIZE) == (
        100,
        30.0,
        0.9,
        0.0,
        256,
    )
    assert list(moco.MILESTONES) == [60, 80] and moco.GAMMA == 0.1
    assert (
        moco.FEATURE_NORM == "none" and moco.CACHED_FEATURES is False and moco.TRAIN_AUG == "auto"
    )

    shift = load_lincls_config("mean_shift.yaml").LINCLS
    assert (shift.EPOCHS, shift.LR, shift.MOMENTUM, shift.WEIGHT_DECAY, shift.BATCH_SIZE) == (
        40,
        0.01,
        0.9,
        1e-4,
        256,
    )
    assert list(shift.MILESTONES) == [15, 30, 40] and shift.GAMMA == 0.1
    assert shift.FEATURE_NORM == "l2_standardize" and shift.CACHED_FEATURES is False

    digits = load_lincls_config("digits.yaml")
    assert digits.LINCLS.CACHED_FEATURES is True and digits.LINCLS.EPOCHS <= 30
    assert (
        load_lincls_config(os.path.join(CONFIG_DIR, "digits.yaml")) == digits
    )  # a path works as well
    for protocol in (
        moco,
        shift,
        digits.LINCLS,
    ):  # today's behaviour unless a protocol asks otherwise
        assert (
            protocol.ENCODER_BN,
            protocol.NESTEROV,
            protocol.TEST_RESIZE,
            protocol.DROP_LAST,
        ) == ("eval", False, True, False)


def test_official_and_fashion_mnist_protocols_load():
    """rsa_official.yaml is eval_single.py's protocol; fashion_mnist.yaml a cached, CPU-sized one."""
    rsa = load_lincls_config("rsa_official.yaml").LINCLS
    assert (rsa.EPOCHS, rsa.LR, rsa.MOMENTUM, rsa.WEIGHT_DECAY, rsa.BATCH_SIZE) == (
        100,
        30.0,
        0.9,
        0.0,
        256,
    )
    assert list(rsa.MILESTONES) == [60, 80] and rsa.GAMMA == 0.1 and rsa.NESTEROV is True
    assert rsa.ENCODER_BN == "train" and rsa.CACHED_FEATURES is False and rsa.DROP_LAST is True
    assert (
        rsa.TRAIN_AUG == "random_resized_crop"
        and list(rsa.CROP_SCALE) == [0.08, 1.0]
        and rsa.FLIP_PROB == 0.5
    )
    assert rsa.TEST_RESIZE is False and rsa.FEATURE_NORM == "none"

    fashion = load_lincls_config("fashion_mnist.yaml")
    assert (
        fashion.LINCLS.CACHED_FEATURES is True and fashion.LINCLS.FEATURE_NORM == "l2_standardize"
    )
    assert fashion.LINCLS.ENCODER_BN == "eval" and fashion.LINCLS.EPOCHS <= 30
    assert max(fashion.LINCLS.MILESTONES) < fashion.LINCLS.EPOCHS and fashion.DATA.NUM_WORKERS in (
        0,
        1,
    )


@pytest.mark.parametrize(
    "opts, message",
    [
        (["LINCLS.LRR", "1"], r"Did you mean 'LINCLS.LR'.*transfer/lincls_config.py"),
        (["LINCLS.NUM_WORKERS", "3"], "Did you mean 'DATA.NUM_WORKERS'"),
        (["LINCLS.FEATURE_NORM", "l2"], "Choose one of: none, l2_standardize"),
        (["LINCLS.MILESTONES", "[80, 60]"], "increasing"),
        (["LINCLS.LR", "0"], "LINCLS.LR must be > 0"),
        (["LINCLS.ENCODER_BN", "batch"], "Choose one of: eval, train"),
        (
            ["LINCLS.NESTEROV", "True", "LINCLS.MOMENTUM", "0"],
            "LINCLS.NESTEROV True needs LINCLS.MOMENTUM > 0",
        ),
        (
            ["LINCLS.ENCODER_BN", "train", "LINCLS.CACHED_FEATURES", "True"],
            r"LINCLS.ENCODER_BN train cannot be combined with LINCLS.CACHED_FEATURES True.*"
            r"Set LINCLS.CACHED_FEATURES False .* or LINCLS.ENCODER_BN eval",
        ),
    ],
)
def test_bad_lincls_overrides_are_clear_errors(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_lincls_config("moco_v2.yaml", opts)


def test_data_location_comes_from_the_checkpoint_unless_overridden(checkpoint):
    saved = load_checkpoint(checkpoint)
    same = pretrain_config_of(saved, load_lincls_config("moco_v2.yaml"))
    assert (same.DATA.ROOT, same.DATA.NUM_WORKERS, same.DATA.NAME) == ("datasets", 0, "digits")
    moved_cfg = load_lincls_config("moco_v2.yaml", ["DATA.ROOT", "/data", "DATA.NUM_WORKERS", "3"])
    moved = pretrain_config_of(saved, moved_cfg)
    assert (moved.DATA.ROOT, moved.DATA.NUM_WORKERS, moved.MODEL.WIDTH) == ("/data", 3, 4)


def test_default_output_dir_sits_next_to_the_checkpoint(tmp_path):
    path = str(tmp_path / "run" / "checkpoint_0000180.pth")
    assert default_output_dir(path, "digits.yaml") == str(
        tmp_path / "run" / "lincls_digits_0000180"
    )
    assert default_output_dir(path, "/x/mean_shift.yaml", "target").endswith(
        "lincls_mean_shift_0000180_target"
    )


def test_train_bn_with_cached_features_is_refused_in_the_shipped_cached_protocol():
    with pytest.raises(
        ConfigError, match="LINCLS.ENCODER_BN train cannot be combined with LINCLS.CACHED_FEATURES"
    ):
        load_lincls_config("digits.yaml", ["LINCLS.ENCODER_BN", "train"])


# ---------------------------------------------------------------------------- schedule and norm
def test_nesterov_is_passed_to_sgd():
    head = LinearClassifier(8, 3)
    official, _ = build_optimizer(head, load_lincls_config("rsa_official.yaml"))
    assert (
        official.param_groups[0]["nesterov"] is True and official.param_groups[0]["momentum"] == 0.9
    )
    moco, _ = build_optimizer(head, load_lincls_config("moco_v2.yaml"))
    assert moco.param_groups[0]["nesterov"] is False


def _lr_per_epoch(cfg):
    head = LinearClassifier(8, 3)
    optimizer, scheduler = build_optimizer(head, cfg)
    lrs = []
    for _ in range(cfg.LINCLS.EPOCHS):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_lr_steps_at_the_milestones():
    lrs = _lr_per_epoch(load_lincls_config("mean_shift.yaml"))
    assert len(lrs) == 40
    assert lrs[0] == pytest.approx(0.01) and lrs[14] == pytest.approx(0.01)
    assert lrs[15] == pytest.approx(0.001) and lrs[29] == pytest.approx(0.001)
    assert lrs[30] == pytest.approx(0.0001) and lrs[39] == pytest.approx(0.0001)
    moco = _lr_per_epoch(load_lincls_config("moco_v2.yaml"))
    assert (moco[0], moco[59]) == pytest.approx((30.0, 30.0))
    assert (moco[60], moco[79], moco[80], moco[99]) == pytest.approx((3.0, 3.0, 0.3, 0.3))


def test_mean_shift_features_are_l2_normalised_then_standardised():
    head = LinearClassifier(2, 3, "l2_standardize")
    # L2: [3, 4] -> [0.6, 0.8] and [0, 2] -> [0, 1]; per-dim mean [0.3, 0.9], population std [0.3, 0.1].
    # The std gets eps = 1e-5 added to the variance (as in BatchNorm): sqrt(0.09 + 1e-5), sqrt(0.01 + 1e-5).
    head.set_statistics(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    std = torch.tensor([(0.09 + 1e-5) ** 0.5, (0.01 + 1e-5) ** 0.5])
    assert torch.allclose(head.mean, torch.tensor([0.3, 0.9]))
    assert torch.allclose(head.inv_std, 1 / std)
    test = torch.tensor(
        [[6.0, 8.0], [0.0, 5.0], [1.0, 0.0]]
    )  # -> [0.6, 0.8], [0, 1], [1, 0] after L2
    expected = torch.tensor([[0.3, -0.1], [-0.3, 0.1], [1 - 0.3, 0 - 0.9]]) / std
    assert torch.allclose(head.normalize(test), expected, atol=1e-5)
    assert torch.allclose(
        expected[:2], torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), atol=1e-3
    )  # ~ unit scale
    constant = LinearClassifier(2, 3, "l2_standardize")
    constant.set_statistics(
        torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    )  # 2nd dim always 0: bounded, not 1/0
    assert constant.inv_std[1] == pytest.approx(1e-5**-0.5)
    assert torch.equal(
        LinearClassifier(2, 3, "none").normalize(test), test
    )  # MoCo v2: raw features


def test_small_images_use_a_padded_crop_and_large_ones_a_random_resized_crop(checkpoint):
    pretrain_cfg = pretrain_config_of(
        load_checkpoint(checkpoint), load_lincls_config("moco_v2.yaml")
    )
    names = [
        type(t).__name__
        for t in train_transform(pretrain_cfg, load_lincls_config("moco_v2.yaml")).transforms
    ]
    assert (
        "RandomCrop" in names
        and "RandomHorizontalFlip" in names
        and "RandomResizedCrop" not in names
    )
    pretrain_cfg.defrost()
    pretrain_cfg.DATA.IMAGE_SIZE = 224
    names = [
        type(t).__name__
        for t in train_transform(pretrain_cfg, load_lincls_config("mean_shift.yaml")).transforms
    ]
    assert names[:2] == ["ToRGB", "RandomResizedCrop"] and "RandomHorizontalFlip" in names


def test_test_transform_can_centre_crop_the_native_image(checkpoint):
    """TEST_RESIZE False (eval_single.py): CenterCrop(IMAGE_SIZE) of the native image, no resize."""
    pretrain_cfg = pretrain_config_of(
        load_checkpoint(checkpoint), load_lincls_config("moco_v2.yaml")
    )
    big = torch.zeros(48, 48, 3, dtype=torch.uint8)
    big[8:40, 8:40] = 255  # the central 32 x 32 is white, the 8-pixel border black
    image = Image.fromarray(big.numpy())
    cropped = make_test_transform(pretrain_cfg, load_lincls_config("rsa_official.yaml"))(image)
    resized = make_test_transform(pretrain_cfg, load_lincls_config("moco_v2.yaml"))(image)
    assert cropped.shape == resized.shape == (3, 32, 32)
    white = (1.0 - 0.5) / 0.5  # DATA.MEAN / STD of the digits config are 0.5
    assert torch.allclose(
        cropped, torch.full_like(cropped, white)
    )  # only the white centre, at full resolution
    assert resized.min() < 0  # resized to 32 px first: the black border is still in the picture
    official = train_transform(pretrain_cfg, load_lincls_config("rsa_official.yaml"))
    names = [type(t).__name__ for t in official.transforms]
    assert names[:3] == [
        "ToRGB",
        "RandomResizedCrop",
        "RandomHorizontalFlip",
    ]  # also under 64 px, as eval_single.py


def test_test_images_are_at_the_training_crop_size_not_the_knn_eval_size(checkpoint):
    """STL-10 configs set DATA.EVAL_SIZE 96 for the kNN monitor; the classifier trains and tests at IMAGE_SIZE."""
    pretrain_cfg = pretrain_config_of(
        load_checkpoint(checkpoint), load_lincls_config("moco_v2.yaml")
    )
    pretrain_cfg.defrost()
    pretrain_cfg.DATA.EVAL_SIZE = 48
    image = Image.fromarray(torch.zeros(48, 48, 3, dtype=torch.uint8).numpy())
    for protocol in ("moco_v2.yaml", "rsa_official.yaml"):
        assert make_test_transform(pretrain_cfg, load_lincls_config(protocol))(image).shape == (
            3,
            32,
            32,
        )


# ------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def digits_run(checkpoint, tmp_path_factory):
    """The shipped digits protocol (cached features, 20 epochs) on the tiny checkpoint, run once."""
    out = tmp_path_factory.mktemp("lincls") / "digits"
    return run_linear_eval(checkpoint, "digits.yaml", QUIET + ["OUTPUT_DIR", str(out)])


def test_cached_digits_protocol_learns_well_above_chance(checkpoint, digits_run):
    result, out = digits_run, digits_run["output_dir"]
    # Chance is 10 %. This 2-step width-4 encoder measured 52.9-59.6 % top-1 (top-5 91.6-93.3 %) over
    # 3 pretraining seeds x 2 lincls seeds; 40 % keeps a wide margin and is still 4x chance.
    assert result["top1"] > 40.0 and result["top5"] > 80.0 and result["top5"] >= result["top1"]
    assert result["epochs"] == 20
    for name in ("config.yaml", "pretrain_config.yaml", "log.txt", LINCLS_CHECKPOINT):
        assert os.path.isfile(os.path.join(out, name)), name
    records = _metrics(out)
    assert [r["epoch"] for r in records] == list(range(1, 21))
    assert records[-1]["test_top1"] == result["top1"] and records[-1]["test_top5"] == result["top5"]
    assert [r["lr"] for r in records[10:17]] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001]
    )
    saved = torch.load(os.path.join(out, LINCLS_CHECKPOINT), weights_only=True)
    assert (
        saved["kind"] == LINCLS_KIND
        and saved["epoch"] == 20
        and saved["best_top1"] >= result["top1"]
    )
    assert set(saved) >= {"head", "optimizer", "scheduler", "last", "rng", "config"}

    with pytest.raises(
        FileExistsError, match="--resume"
    ):  # an existing evaluation is never overwritten
        run_linear_eval(checkpoint, "digits.yaml", QUIET + ["OUTPUT_DIR", out])


def test_resume_ends_where_an_uninterrupted_run_ends(checkpoint, digits_run, tmp_path):
    opts = QUIET + ["OUTPUT_DIR", str(tmp_path / "split")]
    first = LinearEvaluator(checkpoint, "digits.yaml", opts)
    for _ in range(
        13
    ):  # stop after epoch 13, past the first milestone: lr and momentum must carry over
        first.run_epoch()
        first.save()
    resumed = LinearEvaluator(checkpoint, "digits.yaml", opts, resume=True)
    assert resumed.epoch == 13 and resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    result = resumed.run()
    assert result["epochs"] == 20
    assert (result["top1"], result["top5"], result["best_top1"]) == (
        digits_run["top1"],
        digits_run["top5"],
        digits_run["best_top1"],
    )
    full_head = torch.load(
        os.path.join(digits_run["output_dir"], LINCLS_CHECKPOINT), weights_only=True
    )["head"]
    for key, value in full_head.items():  # bitwise the classifier of the uninterrupted run
        assert torch.equal(resumed.head.state_dict()[key], value), key
    assert [r["epoch"] for r in _metrics(tmp_path / "split")] == list(range(1, 21))


def test_encoder_stays_frozen_in_eval_mode_with_augmented_training(checkpoint, tmp_path):
    evaluator = LinearEvaluator(
        checkpoint,
        "moco_v2.yaml",
        QUIET
        + [
            "OUTPUT_DIR",
            str(tmp_path / "aug"),
            "LINCLS.EPOCHS",
            "1",
            "LINCLS.LR",
            "0.1",
            "LINCLS.BATCH_SIZE",
            "512",
        ],
    )
    saved = load_checkpoint(checkpoint)
    reference = load_encoder(saved, pretrain_config_of(saved, evaluator.cfg)).state_dict()
    before = copy.deepcopy(evaluator.encoder.state_dict())
    for key, value in reference.items():  # the checkpoint's weights and BN statistics were loaded
        assert torch.equal(before[key], value), key
    modes = []
    evaluator.encoder.register_forward_pre_hook(
        lambda module, inputs: modes.append(module.training)
    )
    head_before = evaluator.head.fc.weight.detach().clone()
    evaluator.run()
    assert (
        len(modes) == 3 + 2
    )  # 3 augmented training batches (1347 images), 2 batches of test features (450)
    assert not any(modes)
    assert all(not p.requires_grad and p.grad is None for p in evaluator.encoder.parameters())
    after = evaluator.encoder.state_dict()
    for key, value in before.items():  # weights and BN running stats (and batch counters) unchanged
        assert torch.equal(after[key], value), key
    assert not torch.equal(evaluator.head.fc.weight, head_before)  # while the classifier did train


@pytest.fixture(scope="module")
def bn_train_run(checkpoint, tmp_path_factory):
    """The official protocol (encoder BN in train mode), 3 short epochs, run once with the encoder watched."""
    out = tmp_path_factory.mktemp("lincls") / "bn_train"
    evaluator = LinearEvaluator(
        checkpoint, "rsa_official.yaml", BN_TRAIN + ["OUTPUT_DIR", str(out)]
    )
    before = copy.deepcopy(evaluator.encoder.state_dict())
    modes = []
    evaluator.encoder.register_forward_pre_hook(
        lambda module, inputs: modes.append(module.training)
    )
    result = evaluator.run()
    return {
        "evaluator": evaluator,
        "result": result,
        "before": before,
        "modes": modes,
        "output_dir": str(out),
    }


def test_encoder_bn_train_moves_running_statistics_but_not_the_weights(checkpoint, bn_train_run):
    evaluator, before = bn_train_run["evaluator"], bn_train_run["before"]
    # per epoch: 2 training batches in train mode (the last incomplete one dropped), then 2 test batches in eval mode
    assert bn_train_run["modes"] == [True, True, False, False] * 3
    assert not evaluator.encoder.training  # left in eval mode, as after a test pass
    after = evaluator.encoder.state_dict()
    params = dict(evaluator.encoder.named_parameters())
    for name, param in params.items():  # frozen: no gradient, and bitwise the checkpoint's weights
        assert not param.requires_grad and param.grad is None, name
        assert torch.equal(param, before[name]), name
    saved = load_checkpoint(checkpoint)
    reference = load_encoder(saved, pretrain_config_of(saved, evaluator.cfg)).state_dict()
    for key in before:
        assert torch.equal(before[key], reference[key]), (
            key
        )  # it started from the checkpoint's statistics
    moved = [k for k in before if k not in params and not torch.equal(after[k], before[k])]
    means = [k for k in before if k.endswith("running_mean")]
    assert means and all(k in moved for k in means)  # every BN layer's running mean moved
    counters = [k for k in before if k.endswith("num_batches_tracked")]
    assert all(
        int(after[k]) == int(before[k]) + 6 for k in counters
    )  # 3 epochs x 2 training batches
    assert evaluator.optimizer.param_groups[0]["nesterov"] is True
    state = torch.load(
        os.path.join(bn_train_run["output_dir"], LINCLS_CHECKPOINT), weights_only=True
    )
    assert state["encoder_bn"] == "train"
    for key, value in state[
        "encoder_buffers"
    ].items():  # the moved statistics are part of the evaluation state
        assert torch.equal(value, after[key]), key


def test_resume_with_encoder_bn_train_is_exact(checkpoint, bn_train_run, tmp_path):
    opts = BN_TRAIN + ["OUTPUT_DIR", str(tmp_path / "split")]
    first = LinearEvaluator(checkpoint, "rsa_official.yaml", opts)
    for _ in range(
        2
    ):  # stop after epoch 2, at the milestone: lr, momentum and BN statistics must carry over
        first.run_epoch()
        first.save()
    with pytest.raises(
        CheckpointError, match="LINCLS.ENCODER_BN train, but this run sets LINCLS.ENCODER_BN eval"
    ):
        LinearEvaluator(
            checkpoint, "rsa_official.yaml", opts + ["LINCLS.ENCODER_BN", "eval"], resume=True
        )
    resumed = LinearEvaluator(checkpoint, "rsa_official.yaml", opts, resume=True)
    assert resumed.epoch == 2 and resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    result = resumed.run()
    full = bn_train_run["evaluator"]
    assert {k: result[k] for k in ("top1", "top5", "best_top1", "best_epoch", "epochs")} == {
        k: bn_train_run["result"][k] for k in ("top1", "top5", "best_top1", "best_epoch", "epochs")
    }
    for (
        key,
        value,
    ) in full.head.state_dict().items():  # bitwise the classifier of the uninterrupted run
        assert torch.equal(resumed.head.state_dict()[key], value), key
    full_buffers = dict(full.encoder.named_buffers())
    for key, value in resumed.encoder.named_buffers():  # and bitwise its BN running statistics
        assert torch.equal(value, full_buffers[key]), key
    assert [r["epoch"] for r in _metrics(tmp_path / "split")] == [1, 2, 3]


def test_a_single_image_batch_in_train_bn_is_a_config_error(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="single image per process.*Set LINCLS.DROP_LAST True"):
        LinearEvaluator(
            checkpoint,
            "rsa_official.yaml",
            QUIET
            + [  # 1347 = 2 x 673 + 1
                "OUTPUT_DIR",
                str(tmp_path / "one"),
                "LINCLS.DROP_LAST",
                "False",
                "LINCLS.BATCH_SIZE",
                "673",
            ],
        )


# ----------------------------------------------------------------------------- last-vs-best reports
def test_last_epoch_is_the_result_and_best_epoch_is_reported_as_selected_on_test(digits_run):
    result, out = digits_run, digits_run["output_dir"]
    records = _metrics(out)
    tops = [r["test_top1"] for r in records]
    assert result["top1"] == tops[-1]  # THE result: the last epoch
    assert (
        result["best_top1"] == max(tops) and result["best_epoch"] == tops.index(max(tops)) + 1
    )  # first best
    assert (
        records[-1]["best_epoch"] == result["best_epoch"]
        and records[-1]["best_top1"] == result["best_top1"]
    )
    for record in records:  # running best, each record labelled with what it was selected on
        assert (
            record["best_top1"] == max(tops[: record["epoch"]])
            and record["best_selected_on"] == "test set"
        )
        assert tops[record["best_epoch"] - 1] == record["best_top1"]
    assert result["best_selected_on"] == "test set"
    assert set(result) >= {
        "top1",
        "top5",
        "best_top1",
        "best_epoch",
        "epochs",
        "output_dir",
        "time_s",
    }
    saved = torch.load(os.path.join(out, LINCLS_CHECKPOINT), weights_only=True)
    assert saved["best_epoch"] == result["best_epoch"] and saved["best_top1"] == result["best_top1"]
    with open(os.path.join(out, "log.txt")) as handle:
        last_line = handle.read().strip().splitlines()[-1]
    assert (
        f"Linear evaluation done after 20 epochs: top-1 {result['top1']:.2f}, top-5 {result['top5']:.2f} "
        f"(last epoch: the result); best top-1 {result['best_top1']:.2f} at epoch {result['best_epoch']} "
        f"(selected on the test set)"
    ) in last_line


def test_checkpoint_without_best_epoch_loads_with_it_unknown(checkpoint, tmp_path):
    """A lincls checkpoint of an earlier version (no best_epoch, no encoder_bn) still resumes."""
    opts = QUIET + ["OUTPUT_DIR", str(tmp_path / "old"), "LINCLS.EPOCHS", "2"]
    first = LinearEvaluator(checkpoint, "digits.yaml", opts)
    for _ in range(2):
        first.run_epoch()
    old = first.checkpoint_dict()
    del old["best_epoch"], old["encoder_bn"]
    save_atomic(old, first.checkpoint_file)
    result = LinearEvaluator(
        checkpoint, "digits.yaml", opts, resume=True
    ).run()  # nothing left to train
    assert (
        result["best_epoch"] is None
        and result["best_top1"] == first.best_top1
        and result["epochs"] == 2
    )
    with open(tmp_path / "old" / "log.txt") as handle:
        log = handle.read()
    assert "did not record the best epoch" in log and "at an unknown epoch" in log
    assert describe_best(50.0, None).startswith("best top-1 50.00 at an unknown epoch")
    assert describe_best(50.0, 7) == "best top-1 50.00 at epoch 7 (selected on the test set)"


# -------------------------------------------------------------------------------- errors and CLI
def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "lincls_tool", os.path.join(ROOT, "tools", "lincls.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wrong_checkpoint_kind_is_a_checkpoint_error(checkpoint, tmp_path, capsys):
    wrong = tmp_path / "not_pretraining.pth"
    torch.save({"kind": LINCLS_KIND, "head": {}}, wrong)
    with pytest.raises(CheckpointError, match="not an MSR pretraining checkpoint"):
        run_linear_eval(str(wrong), "digits.yaml", QUIET + ["OUTPUT_DIR", str(tmp_path / "x")])
    tool = _load_tool()
    args = tool.parse_args([str(wrong), "--cfg", "digits.yaml", "OUTPUT_DIR", str(tmp_path / "y")])
    assert run_main(tool.main, args) == EXIT_USER_ERROR
    assert "not an MSR pretraining checkpoint" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "y")


def test_cli_prints_top1_and_exits_0(checkpoint, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "lincls.py"),
            checkpoint,
            "--cfg",
            "digits.yaml",
            "LINCLS.EPOCHS",
            "2",
            "OUTPUT_DIR",
            str(out),
        ]
        + QUIET,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "linear evaluation top-1:" in proc.stdout and "top-5:" in proc.stdout
    assert "(last of 2 epochs)" in proc.stdout and "selected on the test set" in proc.stdout
    assert "at epoch " in proc.stdout
    assert os.path.isfile(out / LINCLS_CHECKPOINT)


def _distributed_worker(
    rank: int, world: int, port: int, checkpoint: str, opts: list, protocol: str = "digits.yaml"
) -> None:
    """One process of a gloo (CPU) process group running the linear evaluation; saves its encoder's buffers."""
    from pretrain.utils import distributed as comm

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    with comm.process_group():
        evaluator = LinearEvaluator(checkpoint, protocol, opts)
        evaluator.run()
        comm.barrier()
        torch.save(
            dict(evaluator.encoder.named_buffers()),
            os.path.join(evaluator.output_dir, f"buffers_{rank}.pt"),
        )


def test_two_processes_train_the_classifier_like_one(checkpoint, digits_run, tmp_path, free_port):
    """Cached protocol on 2 processes: gathered features, split global batches, averaged gradients.

    The global batch 256 does not divide 1347 images, so the last batch is split 34 / 33: the loss
    scaling must still give the mean over the global batch. Float rounding differs (sums in another
    order), measured max |weight difference| after 20 epochs ~1e-7; a wrong split or unscaled loss
    changes the weights by more than 1e-3.
    """
    import torch.multiprocessing as mp

    out = tmp_path / "two"
    mp.spawn(
        _distributed_worker,
        args=(2, free_port(), checkpoint, QUIET + ["OUTPUT_DIR", str(out)]),
        nprocs=2,
        join=True,
    )
    two = torch.load(out / LINCLS_CHECKPOINT, weights_only=True)
    one = torch.load(os.path.join(digits_run["output_dir"], LINCLS_CHECKPOINT), weights_only=True)
    worst = max(
        (two["head"][k].float() - one["head"][k].float()).abs().max().item() for k in one["head"]
    )
    print(f"max |head weight difference| 2 vs 1 process: {worst:.2e}")
    assert worst <= 1e-4
    assert two["last"]["top1"] == pytest.approx(one["last"]["top1"], abs=0.5)
    assert [r["epoch"] for r in _metrics(out)] == list(
        range(1, 21)
    )  # one writer: no duplicated lines


def test_two_processes_run_the_augmented_official_protocol(checkpoint, tmp_path, free_port):
    """Augmented training on 2 processes with the encoder's BN in train mode (the official protocol).

    Each process loads its share of every epoch (DistributedSampler) and normalises its half of each batch;
    the running statistics are averaged after every epoch, so both processes end with the same ones, and
    those are what rank 0 saves.
    """
    import torch.multiprocessing as mp

    out = tmp_path / "aug2"
    opts = QUIET + ["OUTPUT_DIR", str(out), "LINCLS.EPOCHS", "2", "LINCLS.LR", "0.1"]
    mp.spawn(
        _distributed_worker,
        args=(2, free_port(), checkpoint, opts, "rsa_official.yaml"),
        nprocs=2,
        join=True,
    )
    records = _metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 < r["train_loss"] < 10 and 0 <= r["train_top1"] <= 100 for r in records)
    saved = torch.load(out / LINCLS_CHECKPOINT, weights_only=True)
    assert saved["epoch"] == 2 and saved["encoder_bn"] == "train"
    rank0, rank1 = (torch.load(out / f"buffers_{rank}.pt", weights_only=True) for rank in (0, 1))
    initial = dict(
        load_encoder(
            load_checkpoint(checkpoint),
            pretrain_config_of(load_checkpoint(checkpoint), load_lincls_config()),
        ).named_buffers()
    )
    for key, value in saved["encoder_buffers"].items():
        assert torch.equal(rank0[key], value) and torch.equal(rank1[key], value), key
    assert any(
        not torch.equal(value, initial[key]) for key, value in rank0.items()
    )  # they did move
