"""Reproduce a table of the paper: rows x seeds of pretraining + kNN + linear evaluation -> mean +- std.

A *table* (1, 2 or 8 of the paper, :data:`TABLES`) is a list of *rows*, each a set of config overrides
(e.g. ``byol_aa`` = ``METHOD.NAME byol METHOD.VIEWS AA``) applied on top of ``--cfg`` and before the
user's ``KEY VALUE`` overrides. Every row is run once per seed, each *run* in its own folder
``<root>/<row>/seed<k>/``:

1. pretraining: ``tools/pretrain.py --cfg CFG --resume OUTPUT_DIR <run>/pretrain SEED k <row> <user>``
   as a subprocess (``torchrun`` with ``--nproc-per-node N > 1``);
2. kNN top-1: the final ``knn_top1`` record of the run's ``metrics.jsonl`` (the whole curve is kept);
   when the run logged none at its last checkpoint (``KNN.PERIOD 0``), what ``tools/knn.py CHECKPOINT``
   computes;
3. linear evaluation, as ``tools/lincls.py CHECKPOINT --cfg PROTOCOL --resume OUTPUT_DIR <run>/lincls
   SEED k`` (protocol: ``--lincls`` or the data set's default, :data:`DEFAULT_LINCLS`); the result is read
   back from its ``metrics.jsonl``: the last epoch's test top-1 is THE result, the best epoch (selected
   on the test set) is kept beside it;
4. ``result.json``, written atomically. A run with a result.json is finished and never redone.

Pretraining always runs as a subprocess. The kNN fallback and the linear evaluation call the tools'
functions (``knn_from_checkpoint``, ``run_linear_eval``) in this process when a run has one process
(the same files, one Python start-up less per run) and run ``torchrun tools/knn.py`` / ``tools/lincls.py``
with ``--nproc-per-node N > 1``.

Resuming: every stage that finishes is recorded in ``<run>/progress.json``, pretraining and linear
evaluation resume from their own checkpoints, so the runner can be killed at any moment (SIGKILL
included) and restarted with the same command. Each run folder is locked (``flock``) while a process
works on it; the lock is inherited by the stage's subprocess, which is killed with its runner
(``PR_SET_PDEATHSIG``), so two runners never train the same run. SIGTERM / SIGUSR1 are forwarded to
the running stage, which saves and exits with status 75 (then so does the runner: requeue it).

Reference rows, computed once per runner root and cached in ``<root>/references/``: raw pixels (kNN
with the config's k and temperature on the flattened normalised eval-transform images, and a
scikit-learn logistic regression on the standardised flattened pixels) and the same network at
initialisation (seed 0: a step-0 checkpoint from ``Pretrainer(cfg).save()``, then kNN and the linear
protocol exactly as for trained runs).

Outputs in the root, rewritten after every finished run and at the end (unfinished rows are shown as
pending): ``results.json``, ``results.md`` and ``knn_curves.png``. The standard deviation is the sample
one (n - 1); with one seed it is null in results.json and shown as "n=1" in results.md.

Launchers: ``local`` runs everything in sequence here; ``slurm`` submits one submitit job per run and
one for the references (``submitit.AutoExecutor(folder=<root>/submitit)``), waits for them while writing
partial tables (``--no-wait`` only submits) and collects. ``--dry-run`` prints one command per run,
the references command and the collect command, ready for any scheduler.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from pretrain import (
    ConfigError,
    PlotError,
    UserError,
    derived_values,
    first_line,
    latest_checkpoint,
    load_config,
    read_metrics,
    resolve_config_path,
    save_atomic_bytes,
)

from .lincls_config import CONFIG_DIR as LINCLS_CONFIG_DIR
from .lincls_config import load_lincls_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS_DIR = os.path.join(REPO_ROOT, "tools")
DEFAULT_ROOT = os.path.join("output", "reproduce")
EXIT_PREEMPTED = 75  # as tools/pretrain.py (pretrain.utils.preemption.EXIT_PREEMPTED)
LOCK_FILE = ".lock"
LOCK_WAIT_S = (
    60.0  # how long a runner waits for a run folder another process holds (e.g. a dying stage)
)
RESULTS_JSON, RESULTS_MD, CURVES_PNG = "results.json", "results.md", "knn_curves.png"
REFERENCES_DIR = "references"
# Keys of the user's overrides that the linear evaluation shares with pretraining (its other keys differ).
LINCLS_SHARED_KEYS = ("DEVICE", "PROGRESS_BAR")
QUIET = (
    "PROGRESS_BAR",
    "False",
)  # the stages write to log files: no progress bars (an override may restore them)
# Data sets whose raw pixels are too large for an in-memory kNN bank / logistic regression.
NO_RAW_PIXEL_REFERENCE = ("imagenet", "imagenet100")
RAW_LINEAR_MAX_ITER = 500
PAPER_DATA_SETS = ("cifar10", "cifar100", "stl10", "tiny_imagenet", "imagenet100", "imagenet")
DEFAULT_LINCLS = {
    "digits": "digits.yaml",
    "fashion_mnist": "fashion_mnist.yaml",
    "cifar10": "moco_v2.yaml",
    "cifar100": "moco_v2.yaml",
    "stl10": "moco_v2.yaml",
    "tiny_imagenet": "moco_v2.yaml",
    "imagenet100": "mean_shift.yaml",
    "imagenet": "mean_shift.yaml",
}


class RowError(ConfigError):
    """An unknown table or row name; the message lists the valid ones."""


class StageFailedError(UserError, RuntimeError):
    """A stage's subprocess failed; the message names the command, its log and its last line."""


class RunBusyError(UserError, RuntimeError):
    """Another process holds a run folder's lock."""


class Preempted(Exception):
    """A stage stopped on SIGTERM / SIGUSR1 after saving (exit status 75): run the same command again."""


# =================================================================================================
# Tables and rows
# =================================================================================================
@dataclass(frozen=True)
class Row:
    """A row of a table: a stable name, a label for the tables and its config overrides."""

    name: str
    label: str
    opts: Tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """One of the paper's tables: its rows and a description that says what is (not) reproduced."""

    number: int
    title: str
    description: str
    rows: Tuple[Row, ...]

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)


BYOL_AA = Row(
    "byol_aa", "BYOL-AA (two fully aggressive views)", ("METHOD.NAME", "byol", "METHOD.VIEWS", "AA")
)
SIMSIAM = Row(
    "simsiam",
    "SimSiam (two fully aggressive views)",
    ("METHOD.NAME", "simsiam", "METHOD.VIEWS", "AA"),
)
TABLES: Dict[int, Table] = {
    1: Table(
        1,
        "BYOL with aggressive / weak views vs MSR with fixed / decaying beta",
        "The paper's Table 1 (preliminary study), with beta_base 0.5 as in the paper's runs: BYOL on two "
        "fully aggressive views (AA), BYOL-AW (independent crops, one fully aggressive and one weak view, "
        "BYOL's symmetric loss, as the official code), and MSR with beta fixed at 0.5 or decayed from 0.5 "
        "to 0 (cosine). All of the paper's rows are implemented.",
        (
            BYOL_AA,
            Row(
                "byol_aw",
                "BYOL-AW (one aggressive, one weak view)",
                ("METHOD.NAME", "byol", "METHOD.VIEWS", "AW"),
            ),
            Row(
                "msr_fixed",
                "MSR, fixed beta 0.5",
                ("METHOD.NAME", "msr", "MSR.BETA_SCHEDULE", "constant", "MSR.BETA_BASE", "0.5"),
            ),
            Row(
                "msr_decay",
                "MSR, beta 0.5 decayed to 0",
                ("METHOD.NAME", "msr", "MSR.BETA_SCHEDULE", "cosine", "MSR.BETA_BASE", "0.5"),
            ),
        ),
    ),
    2: Table(
        2,
        "Main results: linear evaluation of SimSiam, BYOL and MSR",
        "The rows of the paper's main results (Table 2) that this project implements: SimSiam, BYOL and MSR "
        "(beta_base of the config, the paper's per-data-set value, cosine decay). Left out: the paper's "
        "other baselines, which this project does not implement (contrastive methods such as SimCLR and "
        "MoCo, among others; the paper's text was not reachable here to list every one of its rows).",
        (
            SIMSIAM,
            BYOL_AA,
            Row(
                "msr_decay",
                "MSR (beta_base of the config, cosine decay)",
                ("METHOD.NAME", "msr", "MSR.BETA_SCHEDULE", "cosine"),
            ),
        ),
    ),
    8: Table(
        8,
        "SimSiam with and without MSR",
        "The paper's Table 8: SimSiam on two fully aggressive views, and SimSiam + MSR (weak and aggressive "
        "views, negative cosine, no EMA target, beta_base of the config with cosine decay).",
        (SIMSIAM, Row("simsiam_msr", "SimSiam + MSR", ("METHOD.NAME", "simsiam_msr"))),
    ),
}

# Linear top-1 (%) the paper reports for MSR, keyed by (table, row, DATA.NAME, SOLVER.EPOCHS). Source:
# the project design notes (shared/DESIGN.md) section 3 ("Reported results to compare against", taken
# from the paper, arXiv 2206.01999, NeurIPS 2022); 73.1 (ImageNet-1K, 200 epochs, ResNet-50) is also
# stated in the paper's abstract (NeurIPS 2022 abstract page and the official repository's README).
# The full text of the paper's Tables 1, 2 and 8 could not be read here, so no other number is given
# (and none is invented):
# results.md says "paper numbers not available here" for everything else.
PAPER_LINEAR_TOP1 = {
    (2, "msr_decay", "imagenet100", 100): 83.7,
    (2, "msr_decay", "imagenet100", 200): 85.5,
    (2, "msr_decay", "imagenet", 100): 71.4,
    (2, "msr_decay", "imagenet", 200): 73.1,
}
PAPER_SOURCE = (
    "MSR's reported results (DESIGN.md section 3, from the paper arXiv 2206.01999; ImageNet-1K 73.1 "
    "also in its abstract)"
)


def get_table(number) -> Table:
    """The table numbered ``number`` (int or text); RowError listing 1, 2, 8 otherwise."""
    try:
        return TABLES[int(number)]
    except (KeyError, ValueError, TypeError):
        raise RowError(
            f"Unknown table '{number}'. Tables: {', '.join(map(str, TABLES))} "
            f"(the paper's Tables {', '.join(map(str, TABLES))})."
        ) from None


def select_rows(table: Table, rows: Optional[str]) -> Tuple[str, ...]:
    """Row names from ``--rows a,b`` (all rows when empty), in the table's order; RowError for unknown names."""
    valid = [r.name for r in table.rows]
    if not rows:
        return tuple(valid)
    wanted = [name.strip() for name in rows.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in valid]
    if unknown or not wanted:
        raise RowError(
            f"Unknown row(s) {', '.join(repr(n) for n in unknown) or repr(rows)} for Table "
            f"{table.number}; valid rows: {', '.join(valid)}."
        )
    return tuple(name for name in valid if name in wanted)


def paper_numbers(table: int, row: str, data_name: str) -> List[dict]:
    """The paper's linear top-1 for this row and data set, one entry per reported epoch budget."""
    return [
        {"epochs": ep, "linear_top1": value, "source": PAPER_SOURCE}
        for (t, r, d, ep), value in sorted(PAPER_LINEAR_TOP1.items())
        if (t, r, d) == (table, row, data_name)
    ]


# =================================================================================================
# Statistics
# =================================================================================================
def summarize(values: Iterable[float]) -> dict:
    """{"mean", "std", "n"} of ``values``; std is the sample one (n - 1), None when n < 2 (mean None when n == 0)."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n if n else None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def mean_curve(
    curves: Sequence[Sequence[Sequence[float]]],
) -> Tuple[List[int], List[float], List[float]]:
    """(steps, mean, std) of several (step, value) curves, each step over the curves that have it (std 0 for one)."""
    by_step: Dict[int, List[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(int(step), []).append(float(value))
    steps = sorted(by_step)
    stats = [summarize(by_step[s]) for s in steps]
    return steps, [s["mean"] for s in stats], [s["std"] or 0.0 for s in stats]


# =================================================================================================
# The plan: what to run, where
# =================================================================================================
@dataclass(frozen=True)
class Plan:
    """One invocation's table, config, rows, seeds and overrides (picklable: submitit jobs carry it)."""

    table: int
    cfg: str  # --cfg as given (name in configs/pretrain/ or a path)
    rows: Tuple[str, ...]
    seeds: Tuple[int, ...]
    opts: Tuple[str, ...]  # the user's KEY VALUE overrides, OUTPUT_DIR removed
    root: str  # absolute runner root
    root_opt: Optional[str] = None  # OUTPUT_DIR as the user gave it (None: the default root)
    lincls: str = ""  # the linear-evaluation protocol (name in configs/lincls/ or a path)
    lincls_opt: Optional[str] = None  # --lincls as given
    nproc: int = 1
    command: str = ""

    @property
    def table_spec(self) -> Table:
        return TABLES[self.table]

    def run_dir(self, row: str, seed: int) -> str:
        return os.path.join(self.root, row, f"seed{seed}")

    def row_opts(self, row: str, seed: int) -> List[str]:
        """SEED, no progress bars, the row's overrides, then the user's (which win)."""
        return ["SEED", str(seed), *QUIET, *self.table_spec.row(row).opts, *self.opts]

    def base_config(self, seed: int = 0):
        """The config without row overrides (references, budget, data set)."""
        return load_config(self.cfg, ["SEED", str(seed), *QUIET, *self.opts])


def split_output_dir(opts: Sequence[str]) -> Tuple[List[str], Optional[str]]:
    """(overrides without OUTPUT_DIR, the OUTPUT_DIR value or None): OUTPUT_DIR names the runner's root."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"Overrides come as KEY VALUE pairs; '{opts[-1]}' has no value.")
    kept, root = [], None
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == "SEED":
            raise ConfigError(
                "SEED is set for each run by --seeds; remove the SEED override "
                "(e.g. --seeds 0 1 2)."
            )
        if key == "OUTPUT_DIR":
            root = value
        else:
            kept += [key, value]
    return kept, root


def default_root(table: int, cfg: str) -> str:
    """output/reproduce/table<N>_<cfg stem>: one root per table and config."""
    return os.path.join(DEFAULT_ROOT, f"table{table}_{os.path.splitext(os.path.basename(cfg))[0]}")


def default_lincls(data_name: str) -> str:
    """The paper's linear protocol for a data set (the digits / Fashion-MNIST ones for the CPU data)."""
    if data_name not in DEFAULT_LINCLS:
        raise ConfigError(
            f"No default linear-evaluation protocol for DATA.NAME '{data_name}'; pass --lincls "
            f"CONFIG (a name in configs/lincls/ or a path)."
        )
    return DEFAULT_LINCLS[data_name]


def build_plan(
    table,
    cfg: str,
    seeds: Sequence[int],
    rows: Optional[str] = None,
    opts: Sequence[str] = (),
    lincls: Optional[str] = None,
    nproc: int = 1,
    command: str = "",
) -> Plan:
    """Check everything that can be checked before any compute (table, rows, seeds, configs, protocol)."""
    spec = get_table(table)
    names = select_rows(spec, rows)
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ConfigError("--seeds needs at least one seed, e.g. --seeds 0 1 2.")
    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {nproc}.")
    kept, root_opt = split_output_dir(opts)
    root = os.path.abspath(root_opt or default_root(spec.number, cfg))
    plan = Plan(
        spec.number, cfg, names, seeds, tuple(kept), root, root_opt, "", lincls, nproc, command
    )
    base = plan.base_config()
    for name in names:  # every row's resolved config must be valid before hours of compute
        load_config(cfg, plan.row_opts(name, seeds[0]))
    protocol = lincls or default_lincls(base.DATA.NAME)
    resolve_config_path(protocol, LINCLS_CONFIG_DIR)
    return dataclasses.replace(plan, lincls=protocol)


# =================================================================================================
# Files, locks and subprocesses
# =================================================================================================
def read_json(path: str) -> Optional[dict]:
    """The JSON object in ``path``, or None when the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def write_json(data: dict, path: str) -> None:
    """Write ``data`` as JSON atomically (a killed runner leaves the old file or the new one)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_atomic_bytes((json.dumps(data, indent=1) + "\n").encode("utf-8"), path)


@contextlib.contextmanager
def folder_lock(folder: str, wait_s: float = LOCK_WAIT_S):
    """Hold an exclusive flock on ``folder/.lock`` (waiting up to ``wait_s``); yields its file descriptor.

    The lock dies with the process (and with the stage subprocesses that inherit the descriptor), so
    a killed runner never leaves a stale lock.
    """
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunBusyError(
                        f"Another process is working on '{folder}' (it holds {LOCK_FILE}); wait for "
                        f"it to finish or stop it, then run this command again."
                    ) from None
                time.sleep(0.5)
        yield fd
    finally:
        os.close(fd)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the runner dies (Linux), so no orphan keeps training."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


FORWARDED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


def run_child(cmd: Sequence[str], log_path: str, pass_fds: Sequence[int] = ()) -> int:
    """Run ``cmd`` with its output appended to ``log_path``; SIGTERM / SIGUSR1 are forwarded to it.

    Returns its exit status. After a forwarded signal, the handler that was installed before (e.g.
    submitit's requeue) is called once the child has saved and exited.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=tuple(pass_fds),
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    received: List[int] = []

    def forward(signum, _frame):
        received.append(signum)
        proc.send_signal(signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS} if in_main else {}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received and callable(previous.get(received[0])):
        previous[received[0]](received[0], None)
    return code


def last_line(path: str) -> str:
    """The last non-empty line of a text file ("" when there is none)."""
    with (
        contextlib.suppress(OSError),
        open(path, "r", encoding="utf-8", errors="replace") as handle,
    ):
        lines = [line.strip() for line in handle.read().splitlines()[-50:] if line.strip()]
        return lines[-1] if lines else ""
    return ""


def run_stage(cmd: Sequence[str], log_path: str, what: str, lock_fd: Optional[int] = None) -> None:
    """Run one stage's subprocess; Preempted on exit status 75, StageFailedError on any other failure."""
    print(f"  {what}: {shlex.join(cmd)}\n    (output: {log_path})", flush=True)
    code = run_child(cmd, log_path, () if lock_fd is None else (lock_fd,))
    if code == EXIT_PREEMPTED:
        raise Preempted(
            f"{what} stopped on request after saving; run the same command again to continue."
        )
    if code != 0:
        raise StageFailedError(
            f"{what} failed (exit status {code}): `{shlex.join(cmd)}`. Its output is in "
            f"{log_path}; last line: {last_line(log_path)!r}. Fix the cause and run the same "
            f"reproduce command again: finished runs are kept and this one resumes."
        )


def tool_command(plan: Plan, tool: str, args: Sequence[str]) -> List[str]:
    """``python tools/<tool> ARGS``, or through torchrun with several processes per node."""
    script = os.path.join(TOOLS_DIR, tool)
    if plan.nproc > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(plan.nproc),
            script,
            *args,
        ]
    return [sys.executable, script, *args]


def machine_info() -> dict:
    """The machine a run finished on: processor, CPU count, GPU, torch version."""
    import torch

    info = {
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count())
    return info


def describe_machine(info: dict) -> str:
    """One line for results.md from :func:`machine_info`."""
    gpu = f"{info['gpu_count']} x {info['gpu']}" if info.get("gpu") else "no GPU"
    return f"{info.get('processor') or '?'}, {info.get('cpu_count')} CPUs, {gpu}, torch {info.get('torch')}"


# =================================================================================================
# One run: pretraining -> kNN -> linear evaluation -> result.json
# =================================================================================================
@dataclass(frozen=True)
class RunPaths:
    """Where one run (or the network-at-initialisation reference) keeps its stages and its result."""

    folder: str
    result: str

    @property
    def pretrain(self) -> str:
        return os.path.join(self.folder, "pretrain")

    @property
    def lincls(self) -> str:
        return os.path.join(self.folder, "lincls")

    @property
    def progress(self) -> str:
        return os.path.join(self.folder, "progress.json")

    def log(self, stage: str) -> str:
        return os.path.join(self.folder, f"{stage}.log")


def checkpoint_step(path: str) -> int:
    """The step in a checkpoint_<step>.pth name (-1 for another name)."""
    match = re.search(r"checkpoint_(\d+)\.pth$", path)
    return int(match.group(1)) if match else -1


def knn_curve_of(pretrain_dir: str) -> List[List[float]]:
    """[[step, knn_top1], ...] of a pretraining run's metrics.jsonl ([] when it logged none)."""
    try:
        return [[step, value] for step, value in read_metrics(pretrain_dir).get("knn_top1", [])]
    except PlotError:
        return []


def knn_stage(plan: Plan, paths: RunPaths, checkpoint: str, lock_fd: Optional[int]) -> dict:
    """The final kNN top-1 from metrics.jsonl, or evaluated on the checkpoint when the run logged none at its last step.

    The evaluation is tools/knn.py's ``knn_from_checkpoint``: in this process with one process per run,
    through ``torchrun tools/knn.py`` with several.
    """
    curve, step = knn_curve_of(paths.pretrain), checkpoint_step(checkpoint)
    if curve and curve[-1][0] == step:
        return {"knn_top1": curve[-1][1], "knn_curve": curve, "knn_source": "metrics.jsonl"}
    if plan.nproc == 1:
        from pretrain import knn_from_checkpoint

        print(f"  kNN of {checkpoint} (knn_from_checkpoint, as tools/knn.py)", flush=True)
        top1 = knn_from_checkpoint(checkpoint)
    else:
        top1 = _knn_tool(plan, paths, checkpoint, lock_fd)
    return {
        "knn_top1": top1,
        "knn_curve": [p for p in curve if p[0] < step] + [[step, top1]],
        "knn_source": "checkpoint (tools/knn.py)",
    }


def _knn_tool(plan: Plan, paths: RunPaths, checkpoint: str, lock_fd: Optional[int]) -> float:
    """``torchrun tools/knn.py CHECKPOINT``; the top-1 it prints."""
    log = paths.log("knn")
    run_stage(tool_command(plan, "knn.py", [checkpoint]), log, "kNN (tools/knn.py)", lock_fd)
    with open(log, "r", encoding="utf-8", errors="replace") as handle:
        found = re.findall(r"^kNN top-1: ([0-9.]+)\s*$", handle.read(), flags=re.M)
    if not found:
        raise StageFailedError(f"tools/knn.py printed no 'kNN top-1' line; see {log}.")
    return float(found[-1])


def release_gpu_memory() -> None:
    """Give the CUDA memory an in-process evaluation cached back, for the next run's pretraining subprocess."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def read_lincls_result(lincls_dir: str) -> dict:
    """Last-epoch test top-1/top-5 (THE result), best top-1 and its epoch, from a linear evaluation's metrics.jsonl."""
    metrics = read_metrics(lincls_dir)
    test = metrics.get("test_top1")
    if not test:
        raise StageFailedError(
            f"{lincls_dir}/metrics.jsonl holds no test_top1; the linear evaluation did not run."
        )
    best = metrics.get("best_top1") or [max(test, key=lambda p: p[1])]
    best_epoch = metrics.get("best_epoch")
    if best_epoch:
        best_epoch = int(best_epoch[-1][1])
    else:  # an evaluation without best_epoch records: the first epoch with the best test top-1
        best_epoch = next(epoch for epoch, value in test if value == max(v for _, v in test))
    return {
        "linear_top1": test[-1][1],
        "linear_top5": (metrics.get("test_top5") or [[0, None]])[-1][1],
        "linear_best_top1": best[-1][1],
        "linear_best_epoch": best_epoch,
        "linear_epochs": test[-1][0],
        "linear_curve": [[e, v] for e, v in test],
    }


def lincls_stage(
    plan: Plan, paths: RunPaths, checkpoint: str, seed: int, lock_fd: Optional[int]
) -> dict:
    """Linear evaluation with --resume into <run>/lincls; the result is read back from its metrics.jsonl.

    With one process per run it runs in this process (``run_linear_eval``, what tools/lincls.py calls:
    the same files, one Python start-up less per run); with several through ``torchrun tools/lincls.py``.
    """
    shared = [
        x
        for key, value in zip(plan.opts[0::2], plan.opts[1::2])
        if key in LINCLS_SHARED_KEYS
        for x in (key, value)
    ]
    opts = ["OUTPUT_DIR", paths.lincls, "SEED", str(seed), *QUIET, *shared]
    if plan.nproc == 1:
        from .lincls import run_linear_eval

        print(f"  linear evaluation ({plan.lincls}) of {checkpoint} -> {paths.lincls}", flush=True)
        run_linear_eval(checkpoint, plan.lincls, opts, resume=True)
        release_gpu_memory()
    else:
        run_stage(
            tool_command(plan, "lincls.py", [checkpoint, "--cfg", plan.lincls, "--resume", *opts]),
            paths.log("lincls"),
            f"linear evaluation ({plan.lincls})",
            lock_fd,
        )
    return read_lincls_result(paths.lincls)


def timed(function: Callable[[], dict]) -> dict:
    """``function()`` with its wall time added as "wall_time_s"."""
    tic = time.perf_counter()
    out = function()
    out["wall_time_s"] = time.perf_counter() - tic
    return out


def execute_run(
    plan: Plan, paths: RunPaths, seed: int, pretrain: Callable[[Optional[int]], str], extra: dict
) -> dict:
    """The stages of one run, each skipped when progress.json says it finished; returns (and writes) the result."""
    cached = read_json(paths.result)
    if cached is not None:
        return cached
    with folder_lock(paths.folder) as lock_fd:
        cached = read_json(paths.result)  # finished by the process we waited for
        if cached is not None:
            return cached
        progress = read_json(paths.progress) or {}

        def stage(name: str, function: Callable[[], dict]) -> dict:
            if name not in progress:
                progress[name] = timed(function)
                write_json(progress, paths.progress)
            return progress[name]

        checkpoint = stage("pretrain", lambda: {"checkpoint": pretrain(lock_fd)})["checkpoint"]
        knn = stage("knn", lambda: knn_stage(plan, paths, checkpoint, lock_fd))
        linear = stage("lincls", lambda: lincls_stage(plan, paths, checkpoint, seed, lock_fd))
        result = {
            **extra,
            "seed": seed,
            "knn_top1": knn["knn_top1"],
            "linear_top1": linear["linear_top1"],
            "linear_best_top1": linear["linear_best_top1"],
            "linear_best_epoch": linear["linear_best_epoch"],
            "linear_best_selected_on": "test set",
            "linear_top5": linear["linear_top5"],
            "linear_epochs": linear["linear_epochs"],
            "output_dir": paths.folder,
            "checkpoint": checkpoint,
            "step": checkpoint_step(checkpoint),
            "knn_curve": knn["knn_curve"],
            "knn_source": knn["knn_source"],
            "linear_curve": linear["linear_curve"],
            "lincls_protocol": plan.lincls,
            "wall_time_s": sum(progress[s]["wall_time_s"] for s in ("pretrain", "knn", "lincls")),
            "stage_wall_time_s": {
                s: progress[s]["wall_time_s"] for s in ("pretrain", "knn", "lincls")
            },
            "machine": machine_info(),
        }
        write_json(result, paths.result)
        return result


def run_one(plan: Plan, row: str, seed: int) -> dict:
    """One row x seed, resumable: pretraining subprocess, kNN, linear evaluation, result.json."""
    folder = plan.run_dir(row, seed)
    paths = RunPaths(folder, os.path.join(folder, "result.json"))
    cmd = tool_command(
        plan,
        "pretrain.py",
        ["--cfg", plan.cfg, "--resume", "OUTPUT_DIR", paths.pretrain, *plan.row_opts(row, seed)],
    )

    def pretrain(lock_fd: Optional[int]) -> str:
        run_stage(cmd, paths.log("pretrain"), f"pretraining {row} seed {seed}", lock_fd)
        checkpoint = latest_checkpoint(paths.pretrain)
        if checkpoint is None:
            raise StageFailedError(
                f"Pretraining of {row} seed {seed} wrote no checkpoint in {paths.pretrain}."
            )
        return checkpoint

    if read_json(paths.result) is None:
        print(f"== Table {plan.table}, {row}, seed {seed} -> {folder}", flush=True)
    return execute_run(
        plan, paths, seed, pretrain, {"row": row, "pretrain_command": shlex.join(cmd)}
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

    from pretrain import build_eval_loaders, knn_top1, num_classes
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
    knn = knn_top1(
        nn.Flatten(),
        memory_loader,
        query_loader,
        num_classes(cfg),
        device,
        cfg.KNN.K,
        cfg.KNN.TEMPERATURE,
    )
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


# =================================================================================================
# Collect: results.json, results.md, knn_curves.png
# =================================================================================================
RUN_KEYS = (
    "seed",
    "knn_top1",
    "linear_top1",
    "linear_best_top1",
    "linear_best_epoch",
    "output_dir",
    "wall_time_s",
    "knn_curve",
    "machine",
)


def budget_of(plan: Plan) -> dict:
    """Epochs / steps / batch of the resolved config and the linear protocol's epochs."""
    from pretrain import KNOWN_TRAIN_SIZES

    cfg = plan.base_config()
    derived = derived_values(cfg, KNOWN_TRAIN_SIZES.get(cfg.DATA.NAME))
    lin = load_lincls_config(resolve_config_path(plan.lincls, LINCLS_CONFIG_DIR)).LINCLS
    return {
        "data": cfg.DATA.NAME,
        "backbone": cfg.MODEL.BACKBONE,
        "width": cfg.MODEL.WIDTH,
        "epochs": cfg.SOLVER.EPOCHS,
        "max_steps": cfg.SOLVER.MAX_STEPS,
        "batch_size": cfg.SOLVER.BATCH_SIZE,
        "total_steps": derived.get("total_steps"),
        "knn": {
            "k": cfg.KNN.K,
            "temperature": cfg.KNN.TEMPERATURE,
            "period_epochs": cfg.KNN.PERIOD,
        },
        "lincls_protocol": plan.lincls,
        "lincls_epochs": lin.EPOCHS,
    }


def collect(plan: Plan, started: Optional[float] = None) -> dict:
    """results.json's content from the result files on disk (unfinished runs are listed as pending)."""
    budget = budget_of(plan)
    rows = []
    for name in plan.rows:
        runs = [
            r
            for r in (
                read_json(os.path.join(plan.run_dir(name, s), "result.json")) for s in plan.seeds
            )
            if r
        ]
        row = plan.table_spec.row(name)
        rows.append(
            {
                "name": name,
                "label": row.label,
                "overrides": list(row.opts),
                "runs": [{k: r.get(k) for k in RUN_KEYS} for r in runs],
                "pending_seeds": [s for s in plan.seeds if s not in {r["seed"] for r in runs}],
                "knn_top1": summarize(r["knn_top1"] for r in runs),
                "linear_top1": summarize(r["linear_top1"] for r in runs),
                "linear_best_top1": summarize(r["linear_best_top1"] for r in runs),
                "paper": paper_numbers(plan.table, name, budget["data"]),
            }
        )
    references = read_references(plan)
    finished = [r for row in rows for r in row["runs"]] + [
        r for r in references if "wall_time_s" in r
    ]
    machines = list(
        {
            describe_machine(r["machine"]): None
            for row in rows
            for r in row["runs"]
            if r.get("machine")
        }
    )
    spec = plan.table_spec
    return {
        "table": spec.number,
        "title": spec.title,
        "description": spec.description,
        "config": plan.cfg,
        "config_path": resolve_config_path(plan.cfg),
        "root": plan.root,
        "seeds": list(plan.seeds),
        "overrides": list(plan.opts),
        "budget": budget,
        "rows": rows,
        "references": references,
        "std": "sample standard deviation (n - 1); null when n < 2",
        "linear_result": "test top-1 after the protocol's last epoch (linear_best_top1: best epoch, selected "
        "on the test set, for reference only)",
        "paper_data_set": budget["data"] in PAPER_DATA_SETS,
        "command": plan.command,
        "collect_command": shlex.join(["python", "tools/reproduce.py", *cli_args(plan, "collect")]),
        "machines": machines,
        "collected_on": machine_info(),
        "total_wall_time_s": sum(r.get("wall_time_s") or 0.0 for r in finished),
        "runner_wall_time_s": None if started is None else time.perf_counter() - started,
    }


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_summary(stats: dict, total: int) -> str:
    """'47.6 ± 1.2 (n=3)'; 'pending' with no run; the finished count when some are missing."""
    if not stats["n"]:
        return "pending"
    text = _fmt(stats["mean"]) + (f" ± {_fmt(stats['std'])}" if stats["std"] is not None else "")
    return f"{text} (n={stats['n']}" + (
        f" of {total}, rest pending)" if stats["n"] < total else ")"
    )


def format_paper(row: dict, paper_data_set: bool) -> str:
    """The paper column: its numbers with their epoch budgets, or 'not available here'."""
    if not paper_data_set:
        return "-"
    return (
        " / ".join(f"{p['linear_top1']:.1f} ({p['epochs']} ep)" for p in row["paper"])
        or "not available here"
    )


def format_reference(ref: dict, paper_columns: bool) -> str:
    """One reference line of the markdown table."""
    if ref.get("pending"):
        cells = ["pending", "pending"]
    elif ref.get("skipped"):
        cells = [f"skipped ({ref['skipped']})", "-"]
    else:
        cells = [_fmt(ref.get("knn_top1")), _fmt(ref.get("linear_top1"))]
    return f"| reference: {ref['label']} | {' | '.join(cells)} | - | - |" + (
        " - |" if paper_columns else ""
    )


def _per_seed(runs: List[dict], key: str) -> str:
    return ", ".join(f"{r['seed']}: {_fmt(r[key])}" for r in runs) or "-"


def format_markdown(results: dict) -> str:
    """results.md: the table with mean ± std and per-seed values, references, machine, budget and command."""
    budget, paper_cols = results["budget"], results["paper_data_set"]
    header = "| row | kNN top-1 | linear top-1 | kNN per seed | linear per seed |" + (
        " paper linear top-1 |" if paper_cols else ""
    )
    lines = [
        f"# Table {results['table']}: {results['title']}",
        "",
        results["description"],
        "",
        f"Config `{results['config']}` (data set `{budget['data']}`), seeds {results['seeds']}, root "
        f"`{results['root']}`.",
        "",
        header,
        "|---|---|---|---|---|" + ("---|" if paper_cols else ""),
    ]
    total = len(results["seeds"])
    for row in results["rows"]:
        cells = [
            format_summary(row["knn_top1"], total),
            format_summary(row["linear_top1"], total),
            _per_seed(row["runs"], "knn_top1"),
            _per_seed(row["runs"], "linear_top1"),
        ]
        lines.append(
            f"| {row['name']}: {row['label']} | {' | '.join(cells)} |"
            + (f" {format_paper(row, True)} |" if paper_cols else "")
        )
    lines += [format_reference(ref, paper_cols) for ref in results["references"]]
    lines += ["", *_notes(results), "", f"![kNN top-1 over training]({CURVES_PNG})", ""]
    return "\n".join(lines)


def _notes(results: dict) -> List[str]:
    """The bullet points under the table: what the values are, budget, references, machine, command."""
    budget = results["budget"]
    steps = f", {budget['max_steps']} steps (SOLVER.MAX_STEPS)" if budget["max_steps"] else ""
    raw = next(
        (r for r in results["references"] if r["name"] == "raw_pixels" and r.get("linear_method")),
        None,
    )
    paper = (
        f"Paper numbers: {PAPER_SOURCE}; for other rows and data sets paper numbers not available here."
        if results["paper_data_set"]
        else f"Paper numbers: `{budget['data']}` is not one of the paper's data sets, so there is nothing to compare."
    )
    return [
        "- Values: top-1 (%) on the test split, mean ± sample standard deviation (n - 1; no ± with one seed). "
        f"kNN: k={budget['knn']['k']}, "
        f"T={budget['knn']['temperature']}, cosine, the run's final evaluation. Linear: {results['linear_result']}, "
        f"protocol `{budget['lincls_protocol']}` ({budget['lincls_epochs']} epochs).",
        f"- Budget: {budget['backbone']} width {budget['width']}, {budget['epochs']} epochs{steps}, "
        f"{budget['total_steps']} total steps of batch {budget['batch_size']}; overrides "
        f"`{' '.join(results['overrides']) or 'none'}`.",
        "- References: raw pixels = kNN on the flattened normalised eval images and "
        f"{raw['linear_method'] if raw else 'a logistic regression on them'}; the network at initialisation = a "
        "step-0 checkpoint (seed 0) evaluated like the trained runs.",
        f"- Machine: {'; '.join(results['machines']) or describe_machine(results['collected_on'])}. Total run time "
        f"{results['total_wall_time_s']:.0f} s (stages that finished; see results.json for each run).",
        f"- {paper}",
        f"- Command: `{results['command'] or results['collect_command']}`; collect again with "
        f"`{results['collect_command']}`.",
    ]


def plot_knn_curves(results: dict, path: str) -> str:
    """kNN top-1 against the step for each row: mean over seeds with a ± std band, references dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, row in enumerate(results["rows"]):
        steps, mean, std = mean_curve([r["knn_curve"] for r in row["runs"] if r.get("knn_curve")])
        if not steps:
            continue
        ax.plot(
            steps,
            mean,
            color=f"C{i}",
            marker="o" if len(steps) <= 50 else None,
            markersize=3,
            label=f"{row['name']} (n={len(row['runs'])})",
        )
        ax.fill_between(
            steps,
            [m - s for m, s in zip(mean, std)],
            [m + s for m, s in zip(mean, std)],
            color=f"C{i}",
            alpha=0.2,
            linewidth=0,
        )
    for j, ref in enumerate(r for r in results["references"] if r.get("knn_top1") is not None):
        ax.axhline(
            ref["knn_top1"],
            color="0.4",
            linestyle=("--", ":")[j % 2],
            linewidth=1,
            label=f"{ref['label']} (reference)",
        )
    ax.set(
        xlabel="step",
        ylabel="kNN top-1 (%)",
        title=f"Table {results['table']}: kNN top-1 over training (mean ± std over seeds)",
    )
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def write_outputs(plan: Plan, started: Optional[float] = None) -> dict:
    """Collect and write results.json, results.md and knn_curves.png into the root (atomically)."""
    results = collect(plan, started)
    write_json(results, os.path.join(plan.root, RESULTS_JSON))
    save_atomic_bytes(format_markdown(results).encode("utf-8"), os.path.join(plan.root, RESULTS_MD))
    tmp = os.path.join(plan.root, f".{CURVES_PNG}.tmp.{os.getpid()}.png")
    plot_knn_curves(results, tmp)
    os.replace(tmp, os.path.join(plan.root, CURVES_PNG))
    return results


def portable_text(text: str, plan: Plan) -> str:
    """``text`` with the machine's paths made relative: the root's to ``<root>``-relative, the repo's to
    repo-relative (an exported table names no folder of the machine that ran it)."""
    for folder, replacement in ((plan.root, ""), (REPO_ROOT, "")):
        text = text.replace(folder + os.sep, replacement).replace(folder, replacement or ".")
    return text


def exported_files(plan: Plan) -> List[str]:
    """Root-relative paths of what an export holds: the tables, the references and every run's result."""
    names = [RESULTS_JSON, RESULTS_MD, CURVES_PNG]
    names += [os.path.join(REFERENCES_DIR, f"{n}.json") for n in ("raw_pixels", "init")]
    names += [
        os.path.relpath(os.path.join(plan.run_dir(row, seed), "result.json"), plan.root)
        for row in plan.rows
        for seed in plan.seeds
    ]
    return [n for n in names if os.path.isfile(os.path.join(plan.root, n))]


def export_results(plan: Plan, dest: str) -> List[str]:
    """Copy the tables and result files (no checkpoints, no logs) into ``dest`` with portable paths.

    The export can be committed (e.g. under benchmarks/results/) and copied back into a root: the
    runner then skips the finished runs, since only their result.json files are needed for that.
    """
    if os.path.abspath(dest) == plan.root:
        raise ConfigError(f"--export needs a folder other than the runner's root ({plan.root}).")
    written = []
    for name in exported_files(plan):
        source, target = os.path.join(plan.root, name), os.path.join(dest, name)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(source, "rb") as handle:
            data = handle.read()
        if not name.endswith(".png"):
            data = portable_text(data.decode("utf-8"), plan).encode("utf-8")
        save_atomic_bytes(data, target)
        written.append(target)
    return written


# =================================================================================================
# Launchers
# =================================================================================================
def cli_args(
    plan: Plan,
    only: Optional[str] = None,
    rows: Optional[Sequence[str]] = None,
    seeds: Optional[Sequence[int]] = None,
) -> List[str]:
    """tools/reproduce.py arguments that reproduce ``plan`` (restricted to ``rows`` / ``seeds``, one stage).

    The references do not depend on the rows and seeds, so their command names none.
    """
    args = ["--table", str(plan.table), "--cfg", plan.cfg]
    if only != "references":
        args += ["--rows", ",".join(rows or plan.rows), "--seeds", *map(str, seeds or plan.seeds)]
    if plan.lincls_opt:
        args += ["--lincls", plan.lincls_opt]
    if plan.nproc > 1:
        args += ["--nproc-per-node", str(plan.nproc)]
    if only:
        args += ["--only", only]
    return args + list(plan.opts) + (["OUTPUT_DIR", plan.root_opt] if plan.root_opt else [])


def dry_run_text(plan: Plan) -> str:
    """One command per run, the references command and the collect command (nothing is run or written)."""
    runs = [(row, seed) for row in plan.rows for seed in plan.seeds]
    py = ["python", "tools/reproduce.py"]
    lines = [
        f"# Table {plan.table} ({plan.table_spec.title}) with {plan.cfg}: {len(plan.rows)} rows x "
        f"{len(plan.seeds)} seeds = {len(runs)} runs; root {plan.root}",
        f"# {len(runs)} runs (one command each; each resumes where it stopped):",
    ]
    lines += [shlex.join(py + cli_args(plan, "runs", [row], [seed])) for row, seed in runs]
    lines += [
        "# references (raw pixels, the network at initialisation; once per root):",
        shlex.join(py + cli_args(plan, "references")),
        "# collect (writes results.json, results.md and knn_curves.png; run it when the above are done):",
        shlex.join(py + cli_args(plan, "collect")),
    ]
    return "\n".join(lines)


def run_local(plan: Plan, only: Optional[str] = None) -> Optional[dict]:
    """Everything in sequence here: references, then each run; tables after every run and at the end."""
    started = time.perf_counter()
    write_tables = only in (None, "collect")
    if only in (None, "references"):
        compute_references(plan)
        if write_tables:
            write_outputs(plan, started)
    if only in (None, "runs"):
        for row in plan.rows:
            for seed in plan.seeds:
                run_one(plan, row, seed)
                if write_tables:
                    write_outputs(plan, started)
    if not write_tables:
        return None
    results = write_outputs(plan, started)
    print(
        f"results: {os.path.join(plan.root, RESULTS_MD)} (and {RESULTS_JSON}, {CURVES_PNG})",
        flush=True,
    )
    return results


class ReproJob:
    """A submitit job: one row x seed (``row`` None: the references); requeued where it stopped when preempted."""

    def __init__(self, plan: Plan, row: Optional[str] = None, seed: Optional[int] = None):
        self.plan, self.row, self.seed = plan, row, seed

    def __call__(self):
        if self.row is None:
            return compute_references(self.plan)
        return run_one(self.plan, self.row, self.seed)

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption / timeout: resubmit the same job (every stage resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(ReproJob(self.plan, self.row, self.seed))


@dataclass
class SlurmOptions:
    """The --slurm-* flags (and whether to wait for the jobs)."""

    partition: str = ""
    time_min: int = 24 * 60
    gpus_per_node: Optional[int] = None  # None: --nproc-per-node
    cpus_per_task: int = 10
    wait: bool = True
    poll_s: float = 30.0
    extra: dict = field(default_factory=dict)


def slurm_parameters(plan: Plan, options: SlurmOptions) -> dict:
    """submitit parameters: one task per job (torchrun starts the per-GPU processes), slurm_* only on SLURM."""
    params = {
        "name": f"reproduce_table{plan.table}",
        "timeout_min": options.time_min,
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": options.cpus_per_task,
        "gpus_per_node": plan.nproc if options.gpus_per_node is None else options.gpus_per_node,
        "slurm_signal_delay_s": 120,
    }
    if options.partition:
        params["slurm_partition"] = options.partition
    return {**params, **options.extra}


def default_executor(folder: str):
    """submitit's AutoExecutor: SLURM where sbatch exists, else this machine."""
    import submitit

    return submitit.AutoExecutor(folder=folder)


def run_slurm(
    plan: Plan,
    options: SlurmOptions,
    executor_factory: Optional[Callable[[str], object]] = None,
    only: Optional[str] = None,
) -> Optional[dict]:
    """Submit one job per unfinished run (and one for the references), then wait and collect (unless told not to)."""
    import submitit

    started = time.perf_counter()
    executor = (executor_factory or default_executor)(os.path.join(plan.root, "submitit"))
    executor.update_parameters(**slurm_parameters(plan, options))
    work = [] if only in ("runs", "collect") or references_cached(plan) else [ReproJob(plan)]
    if only in (None, "runs"):
        work += [
            ReproJob(plan, row, seed)
            for row in plan.rows
            for seed in plan.seeds
            if read_json(os.path.join(plan.run_dir(row, seed), "result.json")) is None
        ]
    jobs = [executor.submit(job) for job in work]
    names = {
        job.job_id: (w.row or "references") + ("" if w.seed is None else f" seed {w.seed}")
        for job, w in zip(jobs, work)
    }
    cluster = getattr(executor, "cluster", "?")
    print(
        f"submitted {len(jobs)} job(s) with submitit ({cluster}"
        + ("" if cluster == "slurm" else ": no SLURM here, the jobs run on this machine")
        + f") to {os.path.join(plan.root, 'submitit')}: "
        + ", ".join(f"{v} = {k}" for k, v in names.items()),
        flush=True,
    )
    if not options.wait:
        print(
            "not waiting; when they are done: python tools/reproduce.py "
            + shlex.join(cli_args(plan, "collect"))
        )
        return None
    failures = []
    for job in submitit.helpers.as_completed(jobs, poll_frequency=options.poll_s):
        try:
            job.result()
            print(f"done: {names[job.job_id]}", flush=True)
        except Exception as err:  # noqa: BLE001 - a job's failure is reported, the others go on
            failures.append(
                f"{names[job.job_id]} (job {job.job_id}: {first_line(err) or type(err).__name__}; "
                f"log {job.paths.stderr})"
            )
        write_outputs(plan, started)
    results = write_outputs(plan, started)
    if failures:
        raise StageFailedError(
            f"{len(failures)} job(s) failed: {'; '.join(failures)}. The tables hold the finished "
            f"runs; run the same command again to resubmit the rest."
        )
    return results


def normalize_seed_args(argv: Sequence[str]) -> List[str]:
    """``--seeds 0 1 2 KEY VALUE`` -> ``--seeds 0,1,2 KEY VALUE``: only the integers after --seeds are seeds."""
    out, i, argv = [], 0, list(argv)
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == "--seeds":
            j = i + 1
            while j < len(argv) and re.fullmatch(r"-?\d+(,-?\d+)*", argv[j]):
                j += 1
            if j > i + 1:
                out.append(",".join(argv[i + 1 : j]))
            i = j
            continue
        i += 1
    return out


def parse_seeds(text: str) -> List[int]:
    """'0,1,2' (what :func:`normalize_seed_args` makes of ``--seeds 0 1 2``) -> [0, 1, 2]."""
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes integers, e.g. --seeds 0 1 2; got '{text}'.") from None


def main(args, executor_factory: Optional[Callable[[str], object]] = None) -> int:
    """The tool's body: build the plan, then dry-run, run locally or through submitit."""
    plan = build_plan(
        args.table,
        args.cfg,
        parse_seeds(args.seeds),
        args.rows,
        args.opts,
        args.lincls,
        args.nproc_per_node,
        getattr(args, "command", ""),
    )
    if args.dry_run:
        print(dry_run_text(plan))
        return 0
    if getattr(args, "export", None):
        write_outputs(plan)
        written = export_results(plan, args.export)
        print(
            f"exported {len(written)} files from {plan.root} to {args.export} (paths made relative)"
        )
        return 0
    try:
        if args.launcher == "slurm" and args.only != "collect":
            options = SlurmOptions(
                args.slurm_partition,
                args.slurm_time_min,
                args.slurm_gpus_per_node,
                args.slurm_cpus_per_task,
                not args.no_wait,
                args.slurm_poll_s,
            )
            run_slurm(plan, options, executor_factory, args.only)
        else:
            run_local(plan, args.only)
    except Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return EXIT_PREEMPTED
    return 0
