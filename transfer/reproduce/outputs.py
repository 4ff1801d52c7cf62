"""Collecting the results: results.json, results.md, knn_curves.png, and the portable export."""

from __future__ import annotations

import os
import shlex
import time
from typing import List, Optional

from pretrain import (
    ConfigError,
    derived_values,
    resolve_config_path,
    save_atomic_bytes,
)

from ..lincls_config import CONFIG_DIR as LINCLS_CONFIG_DIR
from ..lincls_config import load_lincls_config
from .plan import (
    CURVES_PNG,
    PAPER_DATA_SETS,
    REFERENCES_DIR,
    REPO_ROOT,
    RESULTS_JSON,
    RESULTS_MD,
    Plan,
    cli_args,
)
from .references import (
    read_references,
)
from .stages import (
    describe_machine,
    machine_info,
    read_json,
    write_json,
)
from .tables import (
    PAPER_SOURCE,
    mean_curve,
    paper_numbers,
    summarize,
)

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
