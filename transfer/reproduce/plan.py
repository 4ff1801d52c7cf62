"""The plan of a reproduction: constants, errors, the runs' folders and the checked inputs."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from pretrain import (
    ConfigError,
    UserError,
    load_config,
    resolve_config_path,
)

from ..lincls_config import CONFIG_DIR as LINCLS_CONFIG_DIR
from .tables import (
    TABLES,
    Table,
    get_table,
    select_rows,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


class StageFailedError(UserError, RuntimeError):
    """A stage's subprocess failed; the message names the command, its log and its last line."""


class RunBusyError(UserError, RuntimeError):
    """Another process holds a run folder's lock."""


class Preempted(Exception):
    """A stage stopped on SIGTERM / SIGUSR1 after saving (exit status 75): run the same command again."""


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
