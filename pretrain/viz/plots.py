"""Training curves as a PNG: one small panel per metric of one or several runs' metrics.jsonl.

``tools/pretrain.py`` (and ``tools/lincls.py``) append one JSON object per line to
``OUTPUT_DIR/metrics.jsonl``: ``step``, ``epoch`` and the logged scalars (a kNN line holds only
``knn_top1``). This module turns such files into a picture without a display (matplotlib's Agg canvas,
no pyplot state), so it works on a headless training machine, and overlays several runs (e.g. BYOL vs
MSR) with the run folder's name as the legend.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pretrain.utils.errors import UserError

METRICS_FILE = "metrics.jsonl"
DEFAULT_PLOT_NAME = "curves.png"

# Panel order and titles of the known metrics; any other numeric key follows, alphabetically.
METRIC_TITLES = {
    "loss": "loss",
    "loss_weak_aggressive": "loss (weak -> aggressive)",
    "loss_aggressive_aggressive": "loss (aggressive -> aggressive)",
    "knn_top1": "kNN top-1 (%)",
    "probe_top1": "online probe test top-1 (%)",
    "probe_train_top1": "online probe train top-1 (%)",
    "train_loss": "train loss",
    "train_top1": "train top-1 (%)",
    "test_top1": "test top-1 (%)",
    "test_top5": "test top-5 (%)",
    "best_top1": "best test top-1 (%)",
    "beta": "beta (MSR weight)",
    "tau": "tau (EMA momentum)",
    "lr": "learning rate",
    "grad_norm": "gradient norm",
    "images_per_s": "images / s",
    "epoch_time_s": "epoch time (s)",
}
# Keys that are the x axis or bookkeeping, never a panel.
NOT_METRICS = ("step", "epoch", "best_epoch")  # counters and labels, not curves
# Series with at most this many points get markers (kNN and linear-evaluation curves are short).
MARKER_MAX_POINTS = 50
PANEL_COLUMNS = 3
PANEL_SIZE_IN = (4.0, 2.6)
TITLE_IN = 0.4

Series = list[tuple[int, float]]


class PlotError(UserError, ValueError):
    """A run folder without a usable metrics.jsonl; the message names the file and who writes it."""


def metrics_path(run_dir: str) -> str:
    """The metrics.jsonl of a run folder (a path to the file itself is accepted too)."""
    return run_dir if os.path.isfile(run_dir) else os.path.join(run_dir, METRICS_FILE)


def _missing_metrics_error(path: str, problem: str) -> PlotError:
    return PlotError(
        f"{path} {problem}. tools/pretrain.py writes metrics.jsonl into its OUTPUT_DIR while it "
        f"trains (tools/lincls.py into its linear-evaluation folder); give such a run folder."
    )


def _read_records(path: str) -> list[dict]:
    """The JSON objects of a metrics.jsonl, in file order.

    A last line without its newline is skipped when it does not parse: a run still training may be
    in the middle of appending it. Any other bad line is an error that names the file and line.
    """
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        raise _missing_metrics_error(
            path, "does not exist" + ("" if os.path.isdir(folder) else " (nor its folder)")
        )
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # unterminated last line: being written right now
                continue
            raise PlotError(
                f"{path}, line {number} is not a JSON object ({err}). metrics.jsonl holds one JSON "
                f"object per line, as tools/pretrain.py writes it."
            ) from None
        if isinstance(record, dict) and _is_number(record.get("step")):
            records.append(record)
    if not records:
        raise _missing_metrics_error(path, "holds no metrics yet (no line with a 'step')")
    return records


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics(run_dir: str) -> dict[str, Series]:
    """``{metric: [(step, value), ...]}`` sorted by step, for every numeric metric of a run.

    NaN and inf values are dropped (e.g. ``tau`` of SimSiam, which has no target network) and a metric
    left with no point is absent. When a step appears twice (a resumed run logs the steps after its
    last checkpoint again), the later line wins.
    """
    by_metric: dict[str, dict[int, float]] = {}
    for record in _read_records(metrics_path(run_dir)):
        step = record["step"]
        for key, value in record.items():
            if key in NOT_METRICS or not _is_number(value) or not math.isfinite(value):
                continue
            by_metric.setdefault(key, {})[int(step)] = float(value)
    return {key: sorted(points.items()) for key, points in by_metric.items() if points}


def metric_order(names: Sequence[str]) -> list[str]:
    """Known metrics in the order of METRIC_TITLES, then the others alphabetically."""
    known = [name for name in METRIC_TITLES if name in names]
    return known + sorted(set(names) - set(known))


def run_labels(run_dirs: Sequence[str]) -> list[str]:
    """Legend labels: each run folder's name, or its last two path parts where names collide."""
    parts = [os.path.normpath(os.path.abspath(d)).split(os.sep) for d in run_dirs]
    parts = [p[:-1] if p[-1] == METRICS_FILE else p for p in parts]
    names = [p[-1] for p in parts]
    return [os.path.join(*p[-2:]) if names.count(p[-1]) > 1 else p[-1] for p in parts]


def default_out_path(run_dirs: Sequence[str]) -> str:
    """``RUN_DIR/curves.png`` for one run; ``curves_<a>_vs_<b>.png`` next to the first run for several."""
    first = os.path.dirname(metrics_path(run_dirs[0]))
    if len(run_dirs) == 1:
        return os.path.join(first, DEFAULT_PLOT_NAME)
    stem = "_vs_".join(label.replace(os.sep, "-") for label in run_labels(run_dirs))
    return os.path.join(os.path.dirname(os.path.abspath(first)), f"curves_{stem}.png")


def _draw_panel(ax, metric: str, runs: Sequence[dict[str, Series]], colors: Sequence[str]) -> None:
    """One metric of every run that has it, on one axes."""
    for metrics, color in zip(runs, colors):
        points = metrics.get(metric)
        if not points:
            continue
        steps, values = zip(*points)
        marker = "o" if len(points) <= MARKER_MAX_POINTS else None
        ax.plot(steps, values, color=color, marker=marker, markersize=3, linewidth=1.2)
    ax.set_title(METRIC_TITLES.get(metric, metric), fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if metric == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def _figure(
    panels: list[str], runs: list[dict[str, Series]], labels: list[str], title: str
) -> Figure:
    """The grid of panels, with a legend of the runs when there are several."""
    cols = min(PANEL_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / cols)
    width, height = PANEL_SIZE_IN[0] * cols, PANEL_SIZE_IN[1] * rows + TITLE_IN
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins in inches: half the cost of constrained layout, and the panels all look alike.
    fig.subplots_adjust(
        left=0.55 / width,
        right=1 - 0.15 / width,
        bottom=0.45 / height,
        top=1 - (TITLE_IN + 0.25) / height,
        wspace=0.22,
        hspace=0.45 * 2.6 / PANEL_SIZE_IN[1],
    )
    colors = [f"C{i}" for i in range(len(runs))]
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, panels):
        _draw_panel(ax, metric, runs, colors)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    if len(runs) > 1:  # proxies: the first panel may lack a run that has no point of its metric
        handles = [Line2D([], [], color=c, linewidth=2) for c in colors]
        axes[0].legend(handles, labels, fontsize=7)
    return fig


def plot_runs(run_dirs: Sequence[str], out_path: str | None = None) -> str:
    """Overlay the curves of several runs (legend = folder name); writes a PNG and returns its path.

    One panel per metric present in any run, x = optimizer step (the linear evaluation logs its epoch
    as the step). ``out_path`` defaults to :func:`default_out_path`; its folder is created.
    """
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise PlotError("no run folder given: pass one or more OUTPUT_DIRs of tools/pretrain.py")
    runs = [read_metrics(d) for d in run_dirs]
    panels = metric_order(sorted({name for metrics in runs for name in metrics}))
    if not panels:
        raise _missing_metrics_error(metrics_path(run_dirs[0]), "holds no numeric metric to plot")
    labels = run_labels(run_dirs)
    title = labels[0] if len(labels) == 1 else " vs ".join(labels)
    out_path = out_path or default_out_path(run_dirs)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    _figure(panels, runs, labels, title).savefig(out_path, format="png")
    return out_path


def plot_run(run_dir: str, out_path: str | None = None) -> str:
    """The curves of one run as ``run_dir/curves.png`` (or ``out_path``); returns the path written."""
    return plot_runs([run_dir], out_path)
