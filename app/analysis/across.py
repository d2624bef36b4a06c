"""Across stages, and what a sweep should add seeds to: stages.csv (per model each stage's best
group against the best stage's) and the comparisons not decided yet (racing's pairs).

Part of the `app.analysis.stats` API (re-exported there; its docstring is the API).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from app.analysis.intervals import BEST, UNDECIDED, Summary, against

if TYPE_CHECKING:
    from app.analysis.stats import Comparison


def _summary(row) -> Summary:
    return Summary(int(row["n"]), float(row["mean"]), float(row["std"]), float(row["ci_low"]), float(row["ci_high"]))


STAGES_COLUMNS = [
    "stage", "model", "group", "lr", "n", "mean", "ci_low", "ci_high", "verdict", "difference", "difference_low",
    "difference_high", "test_accuracy", "seeds_needed",
]  # fmt: skip


def stages(comparison: Comparison) -> pd.DataFrame:
    """stages.csv: per model, each stage's best group against the best stage's, with the same Welch
    intervals, verdicts and margin as within a stage (the best stage's row says `best`).
    `test_accuracy`: the stage's best group's runs that were evaluated on the held-out test split."""
    table = comparison.table
    if table.empty:
        return pd.DataFrame(columns=STAGES_COLUMNS)
    bests = table[table["verdict"] == BEST].assign(test_accuracy=comparison.details.loc[table["verdict"] == BEST, "test_accuracy"])
    sign = 1.0 if comparison.statistic.higher_is_better else -1.0
    rows = []
    for _, part in bests.groupby("model", sort=False):
        part = part.assign(_order=range(len(part)))  # the contract's stage order, kept among ties
        ranked = part.sort_values(["mean", "n", "_order"], ascending=[sign < 0, False, True], key=None, kind="stable")
        best = _summary(ranked.iloc[0])
        for position, (_, row) in enumerate(ranked.iterrows()):
            rows.append({**{c: row[c] for c in STAGES_COLUMNS if c in row}, **against(best, _summary(row), comparison.statistic.higher_is_better, comparison.margin, position == 0)})
    frame = pd.DataFrame(rows)[STAGES_COLUMNS]
    frame.attrs["margin"] = comparison.margin
    return frame


@dataclass(frozen=True)
class Side:
    """One group of a comparison: what a sweep needs to add a seed to it."""

    key: str  # `group_keys`
    configuration: dict  # typed params (`train.config.configuration`), repeats' left out
    label: str
    n: int
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class Pair:
    """A comparison not decided yet: `contender` against its stage's `best`."""

    stage: str
    model: str
    verdict: str  # within_noise or cannot_tell
    best: Side
    contender: Side
    seeds_needed: float  # per group, NaN when unknown (a group of one run)


def undecided_pairs(comparison: Comparison) -> list[Pair]:
    """Per stage and model, every (best group, contender group) still `within_noise` or `cannot_tell`,
    in the table's order: what racing adds one seed to each side of."""
    table, details = comparison.table, comparison.details
    pairs = []
    for _, part in table.groupby(["stage", "model"], sort=False):
        best = _side(part.iloc[0], details.loc[part.index[0]])
        for index, row in part.iloc[1:].iterrows():
            if row["verdict"] in UNDECIDED:
                pairs.append(Pair(row["stage"], row["model"], row["verdict"], best, _side(row, details.loc[index]), float(row["seeds_needed"])))
    return pairs


def _side(row, detail) -> Side:
    return Side(detail["key"], dict(detail["configuration"]), row["group"], int(row["n"]), tuple(detail["run_ids"]))
