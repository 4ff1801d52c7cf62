"""Tables 1, 2 and 8 of the paper: their rows, the paper's numbers, mean ± std of the seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from pretrain import ConfigError


class RowError(ConfigError):
    """An unknown table or row name; the message lists the valid ones."""


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
