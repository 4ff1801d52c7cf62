"""Launchers: everything here in sequence, or one submitit job per run; the tool's main."""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from pretrain import (
    ConfigError,
    first_line,
)

from .outputs import (
    export_results,
    write_outputs,
)
from .plan import (
    CURVES_PNG,
    EXIT_PREEMPTED,
    RESULTS_JSON,
    RESULTS_MD,
    Plan,
    Preempted,
    StageFailedError,
    build_plan,
    cli_args,
)
from .references import (
    compute_references,
    references_cached,
)
from .stages import (
    read_json,
    run_one,
)

# =================================================================================================
# Launchers
# =================================================================================================


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
