#!/usr/bin/env python
"""Reproduce a table of the paper: each row x seed pretrained, kNN- and linear-evaluated, then mean +- std.

    python tools/reproduce.py --table 1 --cfg fashion_mnist_cpu.yaml --seeds 0 1 2 [--rows a,b] [--dry-run]
        [--launcher local|slurm] [--lincls CONFIG] [--nproc-per-node N] [--only runs|references|collect]
        [KEY VALUE ...]

Tables: 1 (byol_aa, byol_aw, msr_fixed, msr_decay; beta_base 0.5), 2 (simsiam, byol_aa, msr_decay) and
8 (simsiam, simsiam_msr). Row overrides go on top of --cfg, then the KEY VALUE overrides; OUTPUT_DIR
names the runner's root (default output/reproduce/table<N>_<cfg name>), each run going to
<root>/<row>/seed<k>/. Finished runs are skipped and killed ones resume: run the same command again.
The root gets results.json, results.md and knn_curves.png, rewritten after every finished run.

--dry-run prints one command per run (--only runs), the references command and the collect command, for
any scheduler. --launcher slurm submits one submitit job per run and waits (--no-wait: submit only).
--export DIR collects, then copies the tables and each run's result.json, with relative paths, into DIR.
Exit status: 0 done; 2 a problem with the inputs or a failed stage (message printed); 75 a stage stopped
on SIGTERM / SIGUSR1 after saving (run the same command again).
"""

import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import add_common_arguments, parse_tool_args, run_main  # noqa: E402


def main(args: argparse.Namespace) -> int:
    from transfer.reproduce import main as reproduce

    return reproduce(args)


def without_export(argv):
    """argv without ``--export DIR``: the tables name the command that ran the table, not the copy."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--export":
            skip = True
        elif not arg.startswith("--export="):
            out.append(arg)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    from transfer.reproduce import normalize_seed_args

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override the pretraining config (every key is "
        "defined, with a comment, in pretrain/config.py).",
    )
    parser.add_argument("--table", required=True, help="the paper's table: 1, 2 or 8")
    parser.add_argument(
        "--cfg",
        default="digits_demo.yaml",
        help="pretraining config name in configs/pretrain/ or a path (default: digits_demo.yaml)",
    )
    parser.add_argument(
        "--seeds",
        default="0,1,2",
        metavar="SEED [SEED ...]",
        help="seeds of each row (default 0 1 2)",
    )
    parser.add_argument(
        "--rows", default="", help="comma-separated row names (default: all rows of the table)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands of every run; run nothing"
    )
    parser.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local: everything in sequence here (default); slurm: one submitit job per run",
    )
    parser.add_argument(
        "--lincls",
        default=None,
        help="linear-evaluation protocol in configs/lincls/ or a path (default: by DATA.NAME)",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="processes per run (torchrun --nproc_per_node) for pretraining, kNN and lincls",
    )
    parser.add_argument(
        "--only",
        choices=("runs", "references", "collect"),
        default=None,
        help="one stage: the runs (no tables), the reference rows, or collecting the tables",
    )
    parser.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="collect, then copy the tables and each run's result.json (no checkpoints) into DIR "
        "with the machine's paths made relative, e.g. for benchmarks/results/; runs nothing",
    )
    slurm = parser.add_argument_group("SLURM (--launcher slurm)")
    slurm.add_argument(
        "--slurm-partition", default="", help="partition (default: the cluster's default)"
    )
    slurm.add_argument(
        "--slurm-time-min", type=int, default=24 * 60, help="time limit per job in minutes (1440)"
    )
    slurm.add_argument(
        "--slurm-gpus-per-node",
        type=int,
        default=None,
        help="GPUs per job (default: --nproc-per-node)",
    )
    slurm.add_argument(
        "--slurm-cpus-per-task", type=int, default=10, help="CPUs per job (default 10)"
    )
    slurm.add_argument(
        "--slurm-poll-s", type=float, default=30.0, help="seconds between job status checks (30)"
    )
    slurm.add_argument(
        "--no-wait", action="store_true", help="submit the jobs and exit; collect later"
    )
    add_common_arguments(parser)
    args = parse_tool_args(parser, normalize_seed_args(argv))
    args.command = shlex.join(["python", "tools/reproduce.py", *without_export(argv)])
    return args


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
