"""Bad inputs to every tool: each is refused with one paragraph that names the problem and the fix, exit code 2.

One table (``CASES``) of bad inputs, each run through the real tool entry point (``tools/<x>.py``'s
``parse_args`` and ``main`` under ``pretrain.cli.run_main``) in this process, for speed. Two more cases run
a tool in a subprocess to check the real exit code and that a traceback appears only with --debug.

Files whose unpickling would run code carry a payload that creates a marker file; every case checks that
the marker does not exist afterwards, i.e. nothing was unpickled unsafely.

docs/BAD_INPUTS.md lists the messages (print them with ``pytest tests/test_bad_inputs.py -rP``).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import pickle
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers import TINY_CPU_RUN, overrides

from pretrain.cli import EXIT_USER_ERROR, run_main
from pretrain.config import load_config
from pretrain.engine.checkpoint import CHECKPOINT_KIND, load_checkpoint
from pretrain.engine.trainer import Pretrainer
from pretrain.utils import distributed as comm
from transfer.convert import convert_backbone, extract_backbone, write_d2_pickle
from transfer.lincls import LINCLS_CHECKPOINT, run_linear_eval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny pretraining run (width 4, one step, no kNN): if a case were accepted by mistake it would take seconds.
TINY = overrides(
    TINY_CPU_RUN,
    {
        "MODEL.STEM": "imagenet",
        "SOLVER.EPOCHS": 1,
        "SOLVER.MAX_STEPS": 1,
        "KNN.PERIOD": 0,
        "KNN.AT_START": False,
        "PROGRESS_BAR": False,
    },
)
QUIET = ["PROGRESS_BAR", "False", "DEVICE", "cpu", "DATA.NUM_WORKERS", "0"]
SUB_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ helpers
class CreatesMarker:
    """Unpickling this object calls ``open(path, "w")``: what an attacker's code would do, made harmless."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@functools.cache
def load_tool(name: str):
    """The module of tools/<name>.py (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(name: str, argv: list, capsys) -> tuple:
    """(exit code, stdout, stderr) of tools/<name>.py run in this process as its __main__ block runs it."""
    tool = load_tool(name)
    code = run_main(tool.main, tool.parse_args(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fill(text: str, paths: dict) -> str:
    """Replace each ``<name>`` in ``text`` with ``paths[name]``."""
    for name, value in paths.items():
        text = text.replace(f"<{name}>", str(value))
    return text


def error_paragraph(stderr: str) -> str:
    """The text from the last 'error: ' line of ``stderr`` to its end."""
    start = stderr.rfind("error: ")
    assert start >= 0, f"no 'error: ' line in stderr:\n{stderr}"
    return stderr[start:].strip()


def reset_pretrain_logging() -> None:
    """Close the handlers the tools add to the 'pretrain' logger (their stream may be a closed capture)."""
    for handler in list(logging.getLogger("pretrain").handlers):
        logging.getLogger("pretrain").removeHandler(handler)
        handler.close()


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, one_torch_thread):
    """A one-step pretraining checkpoint, its Detectron2 conversion and a one-epoch linear evaluation (seconds)."""
    root = tmp_path_factory.mktemp("artifacts")
    run_dir = root / "pretrain"
    Pretrainer(load_config("digits_demo.yaml", TINY + ["OUTPUT_DIR", str(run_dir)])).train()
    ckpt = str(run_dir / "checkpoint_0000001.pth")
    pkl = str(root / "converted.pkl")
    write_d2_pickle(convert_backbone(extract_backbone(load_checkpoint(ckpt), source=ckpt)), pkl)
    lincls_dir = root / "lincls"
    run_linear_eval(
        ckpt, "digits.yaml", QUIET + ["OUTPUT_DIR", str(lincls_dir), "LINCLS.EPOCHS", "1"]
    )
    reset_pretrain_logging()
    return {
        "ckpt": ckpt,
        "run_dir": str(run_dir),
        "pkl": pkl,
        "lincls_ckpt": str(lincls_dir / LINCLS_CHECKPOINT),
    }


@pytest.fixture
def paths(artifacts, tmp_path):
    """The module's artifacts plus this test's bad files: unsafe pickles, text, random bytes, a blocking file."""
    marker = tmp_path / "marker_created_by_unpickling"
    torch.save(
        {
            "kind": CHECKPOINT_KIND,
            "model": {"w": torch.zeros(2)},
            "payload": CreatesMarker(str(marker)),
        },
        tmp_path / "evil.pth",
    )
    evil = {
        "model": {"stem.conv1.weight": np.zeros((4, 3, 7, 7), np.float32)},
        "__author__": "?",
        "payload": CreatesMarker(str(marker)),
    }
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(evil, protocol=pickle.HIGHEST_PROTOCOL))
    (tmp_path / "notes.txt").write_text("these are my notes, not a checkpoint\n")
    (tmp_path / "random.pth").write_bytes(b"\x13\x37" + random.Random(0).randbytes(2000))
    shutil.copy(tmp_path / "random.pth", tmp_path / "random.pkl")
    (tmp_path / "file.txt").write_text("a regular file where a folder is expected\n")
    (tmp_path / "list.yaml").write_text("- SOLVER.BASE_LR\n- 0.1\n")
    (tmp_path / "empty").mkdir()
    yield {**artifacts, "tmp": str(tmp_path), "marker": str(marker)}
    reset_pretrain_logging()


# ------------------------------------------------------------------------ preparations of some cases
def world_of_three(paths: dict, monkeypatch) -> None:
    """Pretend to be one of 3 processes (the batch-divisibility check needs no process group)."""
    monkeypatch.setattr(comm, "get_world_size", lambda: 3)


def evil_latest_checkpoint(paths: dict, monkeypatch) -> None:
    """OUTPUT_DIR <tmp>/run whose only checkpoint is a file whose unpickling would run code."""
    os.makedirs(os.path.join(paths["tmp"], "run"))
    shutil.copy(
        os.path.join(paths["tmp"], "evil.pth"),
        os.path.join(paths["tmp"], "run", "checkpoint_0000001.pth"),
    )


def no_fashion_mnist_package(paths: dict, monkeypatch) -> None:
    """As on a machine without Debian's dataset-fashion-mnist (the fallback folder)."""
    from pretrain.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "debian_folder", lambda: None)


def finished_run(paths: dict, monkeypatch) -> None:
    """OUTPUT_DIR <tmp>/done holding a pretraining checkpoint."""
    os.makedirs(os.path.join(paths["tmp"], "done"))
    shutil.copy(paths["ckpt"], os.path.join(paths["tmp"], "done"))


def finished_evaluation(paths: dict, monkeypatch) -> None:
    """OUTPUT_DIR <tmp>/evaluated holding a linear evaluation."""
    os.makedirs(os.path.join(paths["tmp"], "evaluated"))
    shutil.copy(paths["lincls_ckpt"], os.path.join(paths["tmp"], "evaluated"))


# --------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    """A bad input: tool, arguments and the phrases its error must contain (``<name>`` = a path of ``paths``)."""

    id: str
    tool: str
    argv: tuple
    expect: tuple
    prepare: Callable = None
    code: int = EXIT_USER_ERROR
    marks: tuple = ()


PRETRAIN = ("--cfg", "digits_demo.yaml", *TINY, "OUTPUT_DIR", "<tmp>/run")
LINCLS = ("--cfg", "digits.yaml", *QUIET, "OUTPUT_DIR", "<tmp>/lincls")
KNN = ("DATA.NUM_WORKERS", "0", "DEVICE", "cpu")
DET = (
    "--config",
    "synthetic_mask_rcnn.yaml",
    "OUTPUT_DIR",
    "<tmp>/det",
    "MSR.SYNTHETIC_ROOT",
    "<tmp>/synthetic",
    "SOLVER.MAX_ITER",
    "1",
)
UNSAFE = "needs unsafe unpickling"

CASES = [
    # ---- config values and files (tools/pretrain.py; tools/lincls.py and tools/knn.py share the machinery)
    Case(
        "unknown-key",
        "pretrain",
        (*PRETRAIN, "SOLVER.BASE_LRR", "0.1"),
        (
            "Unknown config key 'SOLVER.BASE_LRR'",
            "Did you mean 'SOLVER.BASE_LR'",
            "pretrain/config.py",
        ),
    ),
    Case(
        "key-in-wrong-section",
        "pretrain",
        (*PRETRAIN, "MODEL.BASE_LR", "0.1"),
        ("Unknown config key 'MODEL.BASE_LR'", "Did you mean 'SOLVER.BASE_LR'"),
    ),
    Case(
        "wrong-type",
        "pretrain",
        (*PRETRAIN, "SOLVER.BASE_LR", "abc"),
        ("SOLVER.BASE_LR must be a number, got 'abc'", "KEY VALUE override"),
    ),
    Case(
        "negative-lr",
        "pretrain",
        (*PRETRAIN, "SOLVER.BASE_LR", "-0.1"),
        ("SOLVER.BASE_LR must be > 0, got -0.1", "KEY VALUE override"),
    ),
    Case(
        "beta-out-of-range",
        "pretrain",
        (*PRETRAIN, "MSR.BETA_BASE", "1.5"),
        ("MSR.BETA_BASE must be in [0, 1], got 1.5",),
    ),
    Case(
        "invalid-choice",
        "pretrain",
        (*PRETRAIN, "METHOD.NAME", "msrr"),
        (
            "METHOD.NAME = 'msrr' is not valid",
            "Did you mean 'msr'",
            "msr, byol, simsiam, simsiam_msr",
        ),
    ),
    Case(
        "odd-number-of-overrides",
        "pretrain",
        (*PRETRAIN, "SOLVER.BASE_LR"),
        ("KEY VALUE pairs", "'SOLVER.BASE_LR' has no value"),
    ),
    Case(
        "missing-config-file",
        "pretrain",
        ("--cfg", "nope.yaml", *TINY),
        ("Config 'nope.yaml' not found", "configs/pretrain", "digits_demo.yaml"),
    ),
    Case(
        "yaml-not-a-mapping",
        "pretrain",
        ("--cfg", "<tmp>/list.yaml", *TINY),
        ("Config '<tmp>/list.yaml' must be a mapping of KEY: value, got list",),
    ),
    Case(
        "batch-not-divisible-by-world-size",
        "pretrain",
        PRETRAIN,
        ("SOLVER.BATCH_SIZE 64 (global) is not divisible by the 3 processes", "multiple of 3"),
        prepare=world_of_three,
    ),
    # ---- data
    Case(
        "imagenet-root-empty",
        "pretrain",
        (*PRETRAIN, "DATA.NAME", "imagenet", "DATA.ROOT", "<tmp>/empty"),
        (
            "Dataset 'imagenet'",
            "<tmp>/empty/train does not exist",
            "Expected layout under DATA.ROOT",
            "n01440764_10026.JPEG",
            "val/",
            "image-net.org",
            "point DATA.ROOT at the folder",
        ),
    ),
    Case(
        "cifar10-missing-without-download",
        "pretrain",
        (*PRETRAIN, "DATA.NAME", "cifar10", "DATA.ROOT", "<tmp>/empty"),
        ("Dataset 'cifar10'", "cifar-10-batches-py/", "DATA.DOWNLOAD True"),
    ),
    Case(
        "fashion-mnist-missing",
        "pretrain",
        (*PRETRAIN, "DATA.NAME", "fashion_mnist", "DATA.ROOT", "<tmp>/empty"),
        (
            "Dataset 'fashion_mnist': the IDX files were not found",
            "<tmp>/empty/fashion-mnist",
            "apt-get install -y dataset-fashion-mnist",
            "zalandoresearch/fashion-mnist",
            "point DATA.ROOT",
        ),
        prepare=no_fashion_mnist_package,
    ),
    # ---- missing checkpoints
    Case(
        "knn-missing-checkpoint",
        "knn",
        ("<tmp>/nope.pth", *KNN),
        ("Checkpoint '<tmp>/nope.pth' does not exist", "OUTPUT_DIR"),
    ),
    Case(
        "lincls-train-bn-with-cached-features",
        "lincls",
        ("<ckpt>", *LINCLS, "LINCLS.ENCODER_BN", "train"),
        (
            "LINCLS.ENCODER_BN train cannot be combined with LINCLS.CACHED_FEATURES True",
            "rsa_official.yaml",
        ),
    ),
    Case(
        "lincls-missing-checkpoint",
        "lincls",
        ("<tmp>/nope.pth", *LINCLS),
        ("Checkpoint '<tmp>/nope.pth' does not exist", "OUTPUT_DIR"),
    ),
    Case(
        "convert-missing-checkpoint",
        "convert_to_d2",
        ("<tmp>/nope.pth", "<tmp>/out.pkl", "--no-verify"),
        ("Checkpoint '<tmp>/nope.pth' does not exist", "checkpoint_*.pth"),
    ),
    Case(
        "train-det-missing-weights",
        "train_det",
        (*DET, "MODEL.WEIGHTS", "<tmp>/nope.pkl"),
        ("MODEL.WEIGHTS '<tmp>/nope.pkl' does not exist", "tools/convert_to_d2.py"),
    ),
    # ---- checkpoints of the wrong kind
    Case(
        "lincls-checkpoint-to-convert",
        "convert_to_d2",
        ("<lincls_ckpt>", "<tmp>/out.pkl", "--no-verify"),
        (
            "is a linear-evaluation checkpoint written by tools/lincls.py (kind 'msr_lincls')",
            "no encoder to convert",
            "Convert the pretraining checkpoint it was made from instead: <ckpt>",
        ),
    ),
    Case(
        "lincls-checkpoint-to-knn",
        "knn",
        ("<lincls_ckpt>", *KNN),
        (
            "'<lincls_ckpt>' is a linear-evaluation checkpoint",
            "not an MSR pretraining checkpoint",
            "Pass the pretraining checkpoint it was made from: <ckpt>",
        ),
    ),
    Case(
        "lincls-checkpoint-to-train-det",
        "train_det",
        (*DET, "MODEL.WEIGHTS", "<lincls_ckpt>"),
        (
            "MODEL.WEIGHTS '<lincls_ckpt>' is a linear-evaluation checkpoint",
            "<ckpt>",
            "tools/convert_to_d2.py",
        ),
    ),
    Case(
        "d2-pickle-to-lincls",
        "lincls",
        ("<pkl>", *LINCLS),
        (
            "'<pkl>' is a plain pickle file, not a PyTorch checkpoint",
            "tools/train_det.py",
            "MODEL.WEIGHTS",
            "tools/pretrain.py",
        ),
    ),
    Case(
        "d2-pickle-to-knn",
        "knn",
        ("<pkl>", *KNN),
        (
            "'<pkl>' is a plain pickle file, not a PyTorch checkpoint",
            "tools/train_det.py",
            "tools/pretrain.py",
        ),
    ),
    Case(
        "unconverted-checkpoint-to-train-det",
        "train_det",
        (*DET, "MODEL.WEIGHTS", "<ckpt>"),
        (
            "MODEL.WEIGHTS '<ckpt>' is an MSR pretraining checkpoint",
            "silently train from random initialisation",
            "Convert it first: tools/convert_to_d2.py <ckpt> OUT.pkl",
        ),
    ),
    Case(
        "text-file-to-knn",
        "knn",
        ("<tmp>/notes.txt", *KNN),
        (
            "'<tmp>/notes.txt' is not a PyTorch checkpoint",
            "corrupt",
            "Pass a checkpoint written by tools/pretrain",
        ),
    ),
    Case(
        "random-bytes-to-lincls",
        "lincls",
        ("<tmp>/random.pth", *LINCLS),
        (
            "'<tmp>/random.pth' is not a PyTorch checkpoint",
            "corrupt",
            "Pass a checkpoint written by tools/pretrain",
        ),
    ),
    Case(
        "random-bytes-to-convert",
        "convert_to_d2",
        ("<tmp>/random.pth", "<tmp>/out.pkl", "--no-verify"),
        ("'<tmp>/random.pth' is not a PyTorch checkpoint", "Pass a PyTorch checkpoint of a ResNet"),
    ),
    Case(
        "random-bytes-pkl-to-train-det",
        "train_det",
        (*DET, "MODEL.WEIGHTS", "<tmp>/random.pkl"),
        ("'<tmp>/random.pkl' is not a readable weights pickle", "tools/convert_to_d2.py"),
    ),
    # ---- output locations
    Case(
        "pretrain-output-under-a-file",
        "pretrain",
        (*PRETRAIN, "OUTPUT_DIR", "<tmp>/file.txt/run"),
        ("'<tmp>/file.txt/run'", "'<tmp>/file.txt' is a file, not a folder"),
    ),
    Case(
        "lincls-output-under-a-file",
        "lincls",
        ("<ckpt>", *LINCLS, "OUTPUT_DIR", "<tmp>/file.txt/run"),
        (
            "Cannot use '<tmp>/file.txt/run' as OUTPUT_DIR of the linear evaluation",
            "'<tmp>/file.txt' is a file, not a folder",
            "Choose a folder",
        ),
    ),
    Case(
        "train-det-batch-not-a-multiple-of-the-reference-world-size",
        "train_det",
        (
            "--config",
            "mask_rcnn_1x.yaml",
            "--num-gpus",
            "1",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "OUTPUT_DIR",
            "<tmp>/det",
        ),
        (
            "SOLVER.IMS_PER_BATCH 2 is not a multiple of SOLVER.REFERENCE_WORLD_SIZE 8",
            "reference batch (16 in this config)",
            "SOLVER.REFERENCE_WORLD_SIZE 0",
        ),
    ),
    Case(
        "train-det-output-under-a-file",
        "train_det",
        (*DET, "OUTPUT_DIR", "<tmp>/file.txt/det"),
        (
            "Cannot use '<tmp>/file.txt/det' as OUTPUT_DIR of the detection run",
            "'<tmp>/file.txt' is a file, not a folder",
            "Choose a folder",
        ),
    ),
    Case(
        "convert-output-under-a-file",
        "convert_to_d2",
        ("<ckpt>", "<tmp>/file.txt/out.pkl", "--no-verify"),
        (
            "Cannot use '<tmp>/file.txt' as the folder of the output file '<tmp>/file.txt/out.pkl'",
            "'<tmp>/file.txt' is a file, not a folder",
            "Choose a folder",
        ),
    ),
    Case(
        "pretrain-existing-run-without-resume",
        "pretrain",
        (*PRETRAIN, "OUTPUT_DIR", "<tmp>/done"),
        (
            "OUTPUT_DIR '<tmp>/done' already holds a pretraining run",
            "checkpoint_0000001.pth",
            "Pass --resume",
            "choose another OUTPUT_DIR",
            "nothing was overwritten",
        ),
        prepare=finished_run,
    ),
    Case(
        "lincls-existing-evaluation-without-resume",
        "lincls",
        ("<ckpt>", *LINCLS, "OUTPUT_DIR", "<tmp>/evaluated"),
        (
            "OUTPUT_DIR '<tmp>/evaluated' already holds a linear evaluation",
            "Pass --resume",
            "choose another OUTPUT_DIR",
            "nothing was overwritten",
        ),
        prepare=finished_evaluation,
    ),
    # ---- files whose unpickling would run code
    Case(
        "unsafe-pickle-to-knn",
        "knn",
        ("<tmp>/evil.pth", *KNN),
        ("'<tmp>/evil.pth' needs unsafe unpickling", "io.open", "tools/pretrain.py"),
    ),
    Case(
        "unsafe-pickle-to-lincls",
        "lincls",
        ("<tmp>/evil.pth", *LINCLS),
        ("'<tmp>/evil.pth' needs unsafe unpickling", "io.open", "tools/pretrain.py"),
    ),
    Case(
        "unsafe-pickle-to-convert",
        "convert_to_d2",
        ("<tmp>/evil.pth", "<tmp>/out.pkl", "--no-verify"),
        ("'<tmp>/evil.pth' needs unsafe unpickling", "io.open", "--allow-unsafe-pickle"),
    ),
    Case(
        "unsafe-pickle-as-resumed-checkpoint",
        "pretrain",
        (*PRETRAIN, "--resume"),
        (
            f"<tmp>/run/checkpoint_0000001.pth' {UNSAFE}",
            "None of the 1 checkpoint(s) in '<tmp>/run' can be read",
            "another OUTPUT_DIR",
        ),
        prepare=evil_latest_checkpoint,
    ),
    Case(
        "unsafe-pkl-to-train-det",
        "train_det",
        (*DET, "MODEL.WEIGHTS", "<tmp>/evil.pkl"),
        ("'<tmp>/evil.pkl' needs unsafe unpickling", "io.open", "tools/convert_to_d2.py"),
    ),
    Case(
        "unsafe-pth-to-train-det",
        "train_det",
        (*DET, "MODEL.WEIGHTS", "<tmp>/evil.pth"),
        ("'<tmp>/evil.pth' needs unsafe unpickling", "io.open", "tools/convert_to_d2.py"),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_clear_paragraph(case, paths, capsys, monkeypatch):
    """Exit code 2, no traceback, one paragraph with the bad key/value/path and the fix; nothing unpickled."""
    if case.prepare is not None:
        case.prepare(paths, monkeypatch)
    code, out, err = run_tool(case.tool, [fill(arg, paths) for arg in case.argv], capsys)
    message = error_paragraph(err)
    print(f"{case.id}: {message}")  # shown by pytest -rP; docs/BAD_INPUTS.md quotes these
    assert code == case.code, err
    assert "Traceback" not in out + err
    assert "\n\n" not in message, message
    for phrase in case.expect:
        assert fill(phrase, paths) in err, f"{fill(phrase, paths)!r} not in:\n{err}"
    assert not os.path.exists(paths["marker"]), "a file was unpickled unsafely: its payload ran"


# ----------------------------------------------------------------------------- real processes, --debug
@pytest.mark.parametrize("debug", [False, True], ids=["without-debug", "with-debug"])
def test_exit_code_and_traceback_only_with_debug(paths, debug):
    """A real process: exit code 2 and one paragraph; with --debug the traceback (exit code 1). Never unpickled."""
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "knn.py"),
        os.path.join(paths["tmp"], "evil.pth"),
        *KNN,
    ]
    proc = subprocess.run(
        cmd + (["--debug"] if debug else []),
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=SUB_ENV,
        timeout=120,
    )
    assert proc.returncode == (1 if debug else EXIT_USER_ERROR), proc.stderr
    assert ("Traceback" in proc.stderr) == debug, proc.stderr
    assert UNSAFE in proc.stderr
    assert not os.path.exists(paths["marker"])


# ------------------------------------------------------------------------ safe loading of good weights
def test_a_converted_pickle_still_loads_through_the_safe_paths(paths):
    """The restricted unpickler reads real converted weights, in train_det's check and in its checkpointer."""
    from detectron2.layers import ShapeSpec

    from transfer.detection import (
        SafeDetectionCheckpointer,
        backbone_shape_opts,
        build_any_width_resnet,
        check_weights_fit,
        load_det_config,
        read_d2_pickle,
    )

    weights = read_d2_pickle(paths["pkl"])
    source = load_checkpoint(paths["ckpt"])["model"]
    assert torch.equal(weights["stem.conv1.weight"], source["encoder.conv1.weight"])
    cfg = load_det_config(
        "synthetic_mask_rcnn.yaml",
        ["MODEL.WEIGHTS", paths["pkl"]] + backbone_shape_opts("resnet18", 4),
    )
    check_weights_fit(cfg)  # passes: safe to load, right kind, right shapes
    backbone = build_any_width_resnet(cfg, ShapeSpec(channels=3))
    SafeDetectionCheckpointer(backbone).load(paths["pkl"])
    assert torch.equal(
        backbone.state_dict()["res5.1.conv2.norm.running_var"],
        source["encoder.layer4.1.bn2.running_var"],
    )


def test_older_numpy_pickles_load(tmp_path):
    """Protocol-2 pickles naming numpy.core.* (numpy 1, Detectron2's model zoo) load with the restricted unpickler."""
    from transfer.safe_pickle import load_weights_pickle

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = pickle.dumps({"model": {"w": array}, "__author__": "old"}, protocol=2)
    path = tmp_path / "old.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert np.array_equal(load_weights_pickle(str(path), "")["model"]["w"], array)


def test_detectron2_checkpointer_refuses_unsafe_files(paths):
    """Resumed checkpoints and MODEL.WEIGHTS go through the same safe loading inside Detectron2's checkpointer."""
    from transfer.detection import DetectionSetupError, SafeDetectionCheckpointer
    from transfer.safe_pickle import UnsafePickleError

    checkpointer = SafeDetectionCheckpointer(torch.nn.Linear(2, 2))
    with pytest.raises(UnsafePickleError, match=UNSAFE):
        checkpointer._load_file(os.path.join(paths["tmp"], "evil.pkl"))
    with pytest.raises(DetectionSetupError, match=UNSAFE):
        checkpointer._load_file(os.path.join(paths["tmp"], "evil.pth"))
    with pytest.raises(DetectionSetupError, match="Convert it first"):
        checkpointer._load_file(paths["ckpt"])
    assert not os.path.exists(paths["marker"])
