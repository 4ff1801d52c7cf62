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

from .launch import (
    ReproJob,
    SlurmOptions,
    default_executor,
    dry_run_text,
    main,
    normalize_seed_args,
    parse_seeds,
    run_local,
    run_slurm,
    slurm_parameters,
)
from .outputs import (
    RUN_KEYS,
    budget_of,
    collect,
    export_results,
    exported_files,
    format_markdown,
    format_paper,
    format_reference,
    format_summary,
    plot_knn_curves,
    portable_text,
    write_outputs,
)
from .plan import (
    CURVES_PNG,
    DEFAULT_LINCLS,
    DEFAULT_ROOT,
    EXIT_PREEMPTED,
    LINCLS_SHARED_KEYS,
    LOCK_FILE,
    LOCK_WAIT_S,
    NO_RAW_PIXEL_REFERENCE,
    PAPER_DATA_SETS,
    QUIET,
    RAW_LINEAR_MAX_ITER,
    REFERENCES_DIR,
    REPO_ROOT,
    RESULTS_JSON,
    RESULTS_MD,
    TOOLS_DIR,
    Plan,
    Preempted,
    RunBusyError,
    StageFailedError,
    build_plan,
    cli_args,
    default_lincls,
    default_root,
    split_output_dir,
)
from .references import (
    compute_references,
    init_reference,
    raw_pixel_linear,
    raw_pixel_reference,
    read_references,
    references_cached,
)
from .stages import (
    FORWARDED_SIGNALS,
    RunPaths,
    checkpoint_step,
    describe_machine,
    execute_run,
    folder_lock,
    knn_curve_of,
    knn_stage,
    last_line,
    lincls_stage,
    machine_info,
    read_json,
    read_lincls_result,
    release_gpu_memory,
    run_child,
    run_one,
    run_stage,
    timed,
    tool_command,
    write_json,
)
from .tables import (
    BYOL_AA,
    PAPER_LINEAR_TOP1,
    PAPER_SOURCE,
    SIMSIAM,
    TABLES,
    Row,
    RowError,
    Table,
    get_table,
    mean_curve,
    paper_numbers,
    select_rows,
    summarize,
)

__all__ = [
    "TABLES",
    "BYOL_AA",
    "CURVES_PNG",
    "DEFAULT_LINCLS",
    "DEFAULT_ROOT",
    "EXIT_PREEMPTED",
    "FORWARDED_SIGNALS",
    "LINCLS_SHARED_KEYS",
    "LOCK_FILE",
    "LOCK_WAIT_S",
    "NO_RAW_PIXEL_REFERENCE",
    "PAPER_DATA_SETS",
    "PAPER_LINEAR_TOP1",
    "PAPER_SOURCE",
    "Plan",
    "Preempted",
    "QUIET",
    "RAW_LINEAR_MAX_ITER",
    "REFERENCES_DIR",
    "REPO_ROOT",
    "RESULTS_JSON",
    "RESULTS_MD",
    "RUN_KEYS",
    "ReproJob",
    "Row",
    "RowError",
    "RunBusyError",
    "RunPaths",
    "SIMSIAM",
    "SlurmOptions",
    "StageFailedError",
    "TOOLS_DIR",
    "Table",
    "budget_of",
    "build_plan",
    "checkpoint_step",
    "cli_args",
    "collect",
    "compute_references",
    "default_executor",
    "default_lincls",
    "default_root",
    "describe_machine",
    "dry_run_text",
    "execute_run",
    "export_results",
    "exported_files",
    "folder_lock",
    "format_markdown",
    "format_paper",
    "format_reference",
    "format_summary",
    "get_table",
    "init_reference",
    "knn_curve_of",
    "knn_stage",
    "last_line",
    "lincls_stage",
    "machine_info",
    "main",
    "mean_curve",
    "normalize_seed_args",
    "paper_numbers",
    "parse_seeds",
    "plot_knn_curves",
    "portable_text",
    "raw_pixel_linear",
    "raw_pixel_reference",
    "read_json",
    "read_lincls_result",
    "read_references",
    "references_cached",
    "release_gpu_memory",
    "run_child",
    "run_local",
    "run_one",
    "run_slurm",
    "run_stage",
    "select_rows",
    "slurm_parameters",
    "split_output_dir",
    "summarize",
    "timed",
    "tool_command",
    "write_json",
    "write_outputs",
]
