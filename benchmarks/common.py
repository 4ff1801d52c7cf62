"""Shared helpers of the benchmark scripts: machine description, timing, JSON results, docs tables.

Each script keeps one JSON file, ``benchmarks/results/<name>.json``, that holds a list of runs;
a run replaces an earlier one with the same key (same machine, device and settings), so CPU and
GPU figures live side by side. After every run the script regenerates its own section of
``docs/PERFORMANCE.md`` (between ``<!-- <name>:begin -->`` and ``<!-- <name>:end -->``) from
all the runs in its JSON file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
DOC_PATH = os.path.join(ROOT, "docs", "PERFORMANCE.md")

if ROOT not in sys.path:  # the scripts run as files: make `pretrain` importable without installing
    sys.path.insert(0, ROOT)


# ------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_info(device: str = "cpu") -> Dict[str, object]:
    """CPU model, cores, Python / torch / torchvision versions and the GPU (if any) of this machine."""
    import torch
    import torchvision

    gpu = "none"
    if torch.cuda.is_available():
        dev = torch.device(device)
        index = dev.index if dev.type == "cuda" and dev.index is not None else 0
        gpu = torch.cuda.get_device_name(index)
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": usable_cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_build": torch.version.cuda or "none",
        "gpu": gpu,
        "device": str(device),
        "platform": platform.platform(terse=True),
    }


def machine_line(info: Dict[str, object]) -> str:
    """One line describing a machine, for the docs."""
    gpu = info.get("gpu", "none")
    return (
        f"{info['cpu_model']}, {info['cpu_cores']} cores; GPU: {gpu}; torch {info['torch']}, "
        f"torchvision {info['torchvision']}, Python {info['python']}; device used: {info['device']}"
    )


def command_line() -> str:
    """The command that started this script, written relative to the repository root."""
    python = sys.executable
    try:
        rel = os.path.relpath(python, ROOT)
        python = rel if not rel.startswith("..") else os.path.basename(python)
    except ValueError:
        python = os.path.basename(python)
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return shlex.join([python, script] + sys.argv[1:])


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------------------------- timing
def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how much the repetitions disagree (0.05 = 5 %)."""
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else float("nan")


# ---------------------------------------------------------------------------------- results
def results_path(name: str) -> str:
    return os.path.join(RESULTS_DIR, f"{name}.json")


def load_runs(name: str) -> List[dict]:
    path = results_path(name)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return json.load(handle).get("runs", [])


def run_key(info: Dict[str, object], params: Dict[str, object], ignore: Iterable[str] = ()) -> str:
    """Identity of a run: machine (CPU, GPU, device) and settings; a new run with the same key replaces it.

    ``ignore`` names parameters that only set how long to measure (repetitions, steps), so a
    longer rerun of the same setting replaces the earlier figures instead of adding a table.
    """
    ignore = set(ignore)
    settings = ",".join(f"{k}={params[k]}" for k in sorted(params) if k not in ignore)
    return f"{info['cpu_model']} | {info['cpu_cores']} cores | {info['gpu']} | {info['device']} | {settings}"


def new_run(
    info: Dict[str, object],
    params: Dict[str, object],
    results,
    start: float,
    ignore: Iterable[str] = (),
    **extra,
) -> dict:
    """The record of one benchmark run: its key (see run_key), machine, command, date, settings and
    results, then ``extra`` figures and the wall time since ``start`` (time.perf_counter())."""
    run = {
        "key": run_key(info, params, ignore),
        "machine": info,
        "command": command_line(),
        "date": now_utc(),
        "params": params,
    }
    run.update(extra)
    run["results"] = results
    run["wall_s"] = time.perf_counter() - start
    return run


def save_run(name: str, run: dict) -> List[dict]:
    """Add ``run`` (with a ``key``) to ``benchmarks/results/<name>.json``, replacing the same key; return all runs."""
    runs = [r for r in load_runs(name) if r.get("key") != run["key"]] + [run]
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = results_path(name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"benchmark": name, "runs": runs}, handle, indent=1, sort_keys=False)
        handle.write("\n")
    os.replace(tmp, path)
    return runs


# ------------------------------------------------------------------------------------- docs
def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def run_header(run: dict) -> str:
    """The lines above a run's table: machine, command, date and wall time of the script."""
    return (
        f"Machine: {machine_line(run['machine'])}.  \n"
        f"Command: `{run['command']}` ({run['date']}, the script took {run['wall_s']:.0f} s)."
    )


def update_doc_section(
    name: str, body: str, title: Optional[str] = None, doc_path: str = DOC_PATH
) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in docs/PERFORMANCE.md.

    When the markers are missing, a new section (headed ``title``) with them is appended.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = ""
    if os.path.isfile(doc_path):
        with open(doc_path, encoding="utf-8") as handle:
            text = handle.read()
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        heading = f"## {title or name}\n\n" if title or not text else f"## {name}\n\n"
        text = (text.rstrip() + "\n\n" if text else "# Performance\n\n") + heading + block + "\n"
    os.makedirs(os.path.dirname(doc_path), exist_ok=True)
    with open(doc_path, "w", encoding="utf-8") as handle:
        handle.write(text)


def publish(name: str, run: dict, render: Callable[[dict], str], title: str) -> str:
    """Save ``run`` to its JSON file and rewrite the docs section from every stored run; return the text."""
    runs = save_run(name, run)
    body = "\n\n".join(run_header(r) + "\n\n" + render(r) for r in runs)
    update_doc_section(name, body, title)
    print(
        f"\nWrote {os.path.relpath(results_path(name), ROOT)} and the '{name}' section of "
        f"{os.path.relpath(DOC_PATH, ROOT)}"
    )
    return body


def fmt(value: Optional[float], digits: int = 3) -> str:
    """A number for a table; '-' for a missing value."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def goal_mark(value: Optional[float], goal: float) -> str:
    """``1.07 (meets <= 1.15)`` / ``1.20 (misses <= 1.15)``."""
    if value is None:
        return "-"
    verdict = "meets" if value <= goal else "misses"
    return f"{value:.3f} ({verdict} <= {goal:g})"
