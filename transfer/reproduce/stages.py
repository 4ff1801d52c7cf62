"""One run, resumable: subprocesses under a folder lock, then pretraining -> kNN -> linear evaluation -> result.json."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from pretrain import (
    PlotError,
    latest_checkpoint,
    read_metrics,
    save_atomic_bytes,
)

from .plan import (
    EXIT_PREEMPTED,
    LINCLS_SHARED_KEYS,
    LOCK_FILE,
    LOCK_WAIT_S,
    QUIET,
    TOOLS_DIR,
    Plan,
    Preempted,
    RunBusyError,
    StageFailedError,
)


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
        from ..lincls import run_linear_eval

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
