"""Is the difference real? Groups of repeats, Student-t intervals, Welch comparisons, verdicts.

A *group* is the runs of one configuration: every param equal except those repeats differ
in (`REPEAT_PARAMS`, by default the seed and the model a fine-tuning run started from) and
the per-machine bookkeeping (`BOOKKEEPING_PARAMS`). This module is the one definition of
it: the dashboard's mean lines, its LR-sensitivity view, the report and the sweep's closing
summary all group through `group_keys`.

Per group: n, mean, standard deviation and a 95% Student-t interval of the mean of the
compared statistic. Per stage and model the best group is `best`; every other group gets
the 95% Welch interval of how far it falls short of the best and a verdict: `worse` (the
interval excludes 0), `within_noise` (it does not) or `cannot_tell` (either group has a
single run, so its spread is unknown). Pure: numpy, scipy and pandas, no Streamlit, no MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from app.analysis import numbers
from train import contract

CONFIDENCE = 0.95
POWER = 0.80  # of the seeds-needed estimate: the chance to see a real difference of the observed size

BEST, WORSE, WITHIN_NOISE, CANNOT_TELL = "best", "worse", "within_noise", "cannot_tell"
VERDICTS = (BEST, WORSE, WITHIN_NOISE, CANNOT_TELL)

# Params that differ between repeats of one configuration, by default.
REPEAT_PARAMS = (contract.PARAM_SEED, contract.PARAM_INIT_MODEL)
# Params that say where and how a run was recorded, not what was trained: runs that differ only
# in them are repeats. `cache` and `deterministic` change where images are kept and which kernels
# run, not the data or the model. The data-derived extras (`train_images`, `num_classes`, ...)
# stay keys: they are equal whenever the data are, and differ only when the folder changed.
BOOKKEEPING_PARAMS = ("device", "run_name", "resume", "experiment", "register_as", "cache", "deterministic")
PARTITION = (contract.PARAM_STAGE, contract.PARAM_MODEL)  # a verdict is against the best group of the same stage and model


@dataclass(frozen=True)
class Statistic:
    """A per-run number groups are compared on."""

    name: str
    label: str
    higher_is_better: bool


BEST_VAL_ACCURACY = Statistic(contract.BEST_VAL_ACCURACY, "best validation accuracy", True)
FINAL_VAL_ACCURACY = Statistic("final_val_accuracy", "final validation accuracy", True)
LOWEST_VAL_LOSS = Statistic("lowest_val_loss", "lowest validation loss", False)
STATISTICS = {s.name: s for s in (BEST_VAL_ACCURACY, FINAL_VAL_ACCURACY, LOWEST_VAL_LOSS)}


# ---------------------------------------------------------------------------------------
# Groups: the one definition


def ignored_params(vary=REPEAT_PARAMS) -> set[str]:
    return set(vary) | set(BOOKKEEPING_PARAMS)


def group_keys(params: pd.Series, vary=REPEAT_PARAMS) -> pd.Series:
    """Per run (a Series of param dicts): the text of every param except repeats' and bookkeeping.
    A param one run lacks counts as "" for it, so runs logged before a param existed still group."""
    names = sorted({name for p in params for name in p} - ignored_params(vary))
    return params.map(lambda p: "\x1f".join(f"{n}={p.get(n, '')}" for n in names))


def differing_params(params: pd.Series, vary=REPEAT_PARAMS, exclude=()) -> list[str]:
    """Params (not repeats', not bookkeeping, not `exclude`) whose text differs between the runs; lr first."""
    names = sorted({name for p in params for name in p} - ignored_params(vary) - set(exclude))
    differing = [n for n in names if params.map(lambda p, n=n: str(p.get(n, ""))).nunique() > 1]
    return sorted(differing, key=lambda n: (n != contract.PARAM_LR, n))


def group_labels(params: pd.Series, vary=REPEAT_PARAMS, exclude=()) -> pd.Series:
    """Short readable group names: the params that differ between the groups ("lr 1e-3, schedule cosine")."""
    names = differing_params(params, vary, exclude)
    return params.map(lambda p: ", ".join(f"{n} {param_text(n, p.get(n, ''))}" for n in names) or "all runs")


def param_text(name: str, value) -> str:
    """A param as a sentence shows it; learning rates as 1e-3, 3e-4."""
    if name == contract.PARAM_LR:
        try:
            return lr_text(float(value))
        except (TypeError, ValueError):
            pass
    return str(value) if value != "" else "(empty)"


def lr_text(value: float) -> str:
    return numbers.format_lr(value)  # the one spelling of a rate (1e-3), as on the page


# ---------------------------------------------------------------------------------------
# The numbers


@dataclass(frozen=True)
class Summary:
    """n, mean, standard deviation and the Student-t interval of the mean of one group."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); NaN for one run
    ci_low: float
    ci_high: float


def describe(values, confidence: float = CONFIDENCE) -> Summary:
    """mean ± t(1 - α/2, n - 1) · s / √n; the interval is NaN for one run (no spread to go on)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Difference:
    """a − b with its Welch interval (NaN when either group has one run) and degrees of freedom."""

    value: float
    low: float
    high: float
    df: float


def welch(a: Summary, b: Summary, confidence: float = CONFIDENCE) -> Difference:
    """The difference of the means with Welch's interval (unequal spreads, Welch–Satterthwaite df)."""
    value = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Difference(value, math.nan, math.nan, math.nan)
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    if va + vb == 0:  # both groups repeat one value exactly (deterministic runs): the interval is a point
        return Difference(value, value, value, math.inf)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(va + vb)
    return Difference(value, value - half, value + half, df)


def seeds_needed(difference: float, a: Summary, b: Summary, confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """Seeds per group for a two-sided test at `confidence` to detect `difference` with `power`, at
    the groups' observed spread: n = 2 (z(1 − α/2) + z(power))² σ² / δ², σ² the mean of the two
    variances. A normal approximation: with few seeds the t distribution's heavier tails need a few
    more. NaN when a spread is unknown; inf when the means are equal."""
    if a.n < 2 or b.n < 2:
        return math.nan
    variance = (a.std**2 + b.std**2) / 2
    if difference == 0:
        return math.inf if variance > 0 else math.nan
    z = scipy_stats.norm.ppf(0.5 + confidence / 2) + scipy_stats.norm.ppf(power)
    return float(max(2, math.ceil(2 * z**2 * variance / difference**2)))


# ---------------------------------------------------------------------------------------
# Per-run values of a statistic


def values_of(runs: pd.DataFrame, summary: pd.DataFrame, history: pd.DataFrame, statistic: Statistic) -> pd.DataFrame:
    """One row per run to compare: run_id, run_name, stage, model, status, pruned, params, value.

    `runs` is the app's runs frame, `summary` the per-run table (`frames.summary`: best and final
    validation accuracy), `history` the long form (for the lowest validation loss)."""
    frame = runs[["run_id", "run_name", "stage", "model", "status", "params"]].copy()
    frame["pruned"] = runs["tags"].map(lambda tags: tags.get(contract.TAG_PRUNED) == "true")
    if statistic is LOWEST_VAL_LOSS:
        losses = history[history["key"] == contract.VAL_LOSS] if not history.empty else history
        lowest = losses.groupby("run_id")["value"].min() if not losses.empty else pd.Series(dtype=float)
        frame["value"] = frame["run_id"].map(lowest).astype(float)
    else:
        frame["value"] = frame["run_id"].map(summary.set_index("run_id")[statistic.name]).astype(float)
    return frame.reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Groups ranked per stage and model


TABLE_HEAD = ["stage", "model", "lr"]
TABLE_TAIL = [
    "n", "mean", "std", "ci_low", "ci_high", "verdict", "difference", "difference_low", "difference_high",
    "seeds_needed", "group", "runs",
]  # fmt: skip


@dataclass
class Comparison:
    """The ranked groups (one row per group, `table`), what was left out and why (`notes`)."""

    statistic: Statistic
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)  # the other params that vary between groups (table columns)


def compare(values: pd.DataFrame, statistic: Statistic = BEST_VAL_ACCURACY, vary=REPEAT_PARAMS) -> Comparison:
    """Groups of `values` (see `values_of`) ranked per stage and model, each with its verdict.

    Left out, with a note each: runs that are not FINISHED (their statistic is that of a partial
    run), runs a sweep's pruner stopped, and runs without a finite value of the statistic."""
    usable, notes = _usable(values, statistic)
    params = differing_params(usable["params"], vary, exclude=(*PARTITION, contract.PARAM_LR)) if not usable.empty else []
    columns = [*TABLE_HEAD, *params, *TABLE_TAIL]
    if usable.empty:
        return Comparison(statistic, pd.DataFrame(columns=columns), notes, params)
    usable = usable.assign(key=group_keys(usable["params"], vary).to_numpy())
    rows = [_ranked(part, statistic, vary, params) for _, part in usable.groupby(["stage", "model"], sort=False)]
    table = pd.concat(rows, ignore_index=True)
    table = table.assign(_stage=table["stage"].map(_rank_in(contract.STAGES)), _model=table["model"].map(_rank_in(contract.MODELS)))
    table = table.sort_values(["_stage", "stage", "_model", "model", "_rank"], kind="stable")
    return Comparison(statistic, table[columns].reset_index(drop=True), notes, params)


def _usable(values: pd.DataFrame, statistic: Statistic) -> tuple[pd.DataFrame, list[str]]:
    notes = []
    finished = values["status"].fillna("FINISHED") == "FINISHED" if "status" in values else pd.Series(True, index=values.index)
    if (~finished).any():
        notes.append(f"{int((~finished).sum())} run(s) not FINISHED (running, killed or failed) are left out of the comparison.")
    pruned = values["pruned"].fillna(False).astype(bool) if "pruned" in values else pd.Series(False, index=values.index)
    pruned &= finished
    if pruned.any():
        notes.append(f"{int(pruned.sum())} run(s) stopped early by the sweep's pruner are left out of the comparison.")
    value = pd.to_numeric(values["value"], errors="coerce")
    missing = finished & ~pruned & ~np.isfinite(value.fillna(np.nan))
    if missing.any():
        notes.append(f"{int(missing.sum())} finished run(s) have no {statistic.label} (not logged, or NaN) and are left out of the comparison.")
    keep = finished & ~pruned & ~missing
    usable = values[keep].assign(value=value[keep])
    usable = usable.assign(stage=usable["stage"].fillna("").astype(str), model=usable["model"].fillna("").astype(str))
    return usable, notes


def _rank_in(order: tuple[str, ...]):
    """The contract's order (stages: scratch, full, head, finetune), unknown values after it."""
    return lambda value: order.index(value) if value in order else len(order)


def _ranked(part: pd.DataFrame, statistic: Statistic, vary, params: list[str]) -> pd.DataFrame:
    """The groups of one stage and model: the best first, each other against it."""
    sign = 1.0 if statistic.higher_is_better else -1.0
    labels = group_labels(part["params"], vary, exclude=PARTITION)
    groups = []
    for key, members in part.groupby("key", sort=False):
        summary = describe(members["value"])
        first = members["params"].iloc[0]
        label = labels[members.index[0]]
        if label == "all runs" and contract.PARAM_LR in first:  # one configuration: still say which rate
            label = f"lr {param_text(contract.PARAM_LR, first[contract.PARAM_LR])}"
        groups.append({
            "key": key, "summary": summary, "label": label,
            "lr": _float(first.get(contract.PARAM_LR)), **{p: str(first.get(p, "")) for p in params},
            "runs": "; ".join(members["run_name"].astype(str)), "run_ids": list(members["run_id"]),
        })  # fmt: skip
    # Best: the highest mean (lowest for a loss); among equal means the group with more runs.
    groups.sort(key=lambda g: (-sign * g["summary"].mean, -g["summary"].n, g["label"]))
    best = groups[0]["summary"]
    rows = []
    for rank, group in enumerate(groups):
        s = group["summary"]
        row = {
            "stage": part["stage"].iloc[0], "model": part["model"].iloc[0], "lr": group["lr"],
            **{p: group[p] for p in params},
            "n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci_low, "ci_high": s.ci_high,
            "group": group["label"], "runs": group["runs"], "_rank": rank,
        }  # fmt: skip
        if rank == 0:
            row.update(verdict=BEST, difference=0.0, difference_low=math.nan, difference_high=math.nan, seeds_needed=math.nan)
        else:
            # How far this group falls short of the best, in the statistic's units: positive = worse.
            shortfall = welch(best, s) if statistic.higher_is_better else welch(s, best)
            row.update(
                verdict=_verdict(best, s, shortfall), difference=shortfall.value, difference_low=shortfall.low,
                difference_high=shortfall.high, seeds_needed=seeds_needed(shortfall.value, best, s),
            )  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _verdict(best: Summary, other: Summary, shortfall: Difference) -> str:
    if best.n < 2 or other.n < 2:
        return CANNOT_TELL
    return WORSE if shortfall.low > 0 else WITHIN_NOISE


def _float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------------------
# The answer in words

REPEATS_COMMAND = "-P repeats=3"
REPEATS_HINT = f"add `{REPEATS_COMMAND}` to the sweep"


def explanation(comparison: Comparison) -> str:
    """What the sentences compare, in one line (the page and the report put it above them)."""
    return (f"{comparison.statistic.label.capitalize()} per configuration: mean [95% interval] over its seeds; each other "
            "configuration of a stage against the stage's best, the difference with its 95% Welch interval.")  # fmt: skip


def sentences(comparison: Comparison) -> list[str]:
    """One sentence per stage and model: which group is best, and each other's verdict against it.

    "head: lr 1e-3 is best, 0.802 [0.777, 0.827] over 3 seeds; lr 1e-4 is worse by 0.100
    [0.077, 0.123]; lr 1e-6 is within noise of it (needs ~40 seeds to tell)"."""
    table = comparison.table
    if table.empty:
        return []
    several_models = table["model"].nunique() > 1
    return [_sentence(part, several_models) for _, part in table.groupby(["stage", "model"], sort=False)]


def _sentence(part: pd.DataFrame, several_models: bool) -> str:
    stage, model = part["stage"].iloc[0] or "(no stage)", part["model"].iloc[0]
    where = f"{stage} · {model}" if several_models else stage
    best, others = part.iloc[0], part.iloc[1:]
    if len(part) > 1 and (part["n"] < 2).all():
        return f"{where}: one run each: cannot tell; {REPEATS_HINT} (highest: {best['group']}, {_number(best['mean'])})"
    head = f"{where}: {best['group']} is best, {_interval(best)}"
    if others.empty:
        return head + " (the only configuration)"
    told = [_clause(row) for _, row in others.iterrows() if row["verdict"] != CANNOT_TELL]
    untold = others[others["verdict"] == CANNOT_TELL]
    if not untold.empty:  # one clause for all of them: the same remedy
        why = "the best is one run" if best["n"] < 2 else "one run each" if len(untold) > 1 else "one run"
        told.append(f"{' / '.join(untold['group'])}: cannot tell ({why}; {REPEATS_HINT})")
    return "; ".join([head, *told])


def _interval(row) -> str:
    if row["n"] < 2:
        return f"{_number(row['mean'])} (one run)"
    return f"{_number(row['mean'])} [{_number(row['ci_low'])}, {_number(row['ci_high'])}] over {row['n']} seeds"


def _clause(row) -> str:
    name = row["group"]
    if row["verdict"] == WORSE:
        return f"{name} is worse by {_number(row['difference'])} [{_number(row['difference_low'])}, {_number(row['difference_high'])}]"
    if row["verdict"] == WITHIN_NOISE:
        needed = row["seeds_needed"]
        tell = "equal means: no number of seeds would tell" if math.isinf(needed) else f"needs ~{int(needed)} seeds to tell" if math.isfinite(needed) else "no spread to go on"
        return f"{name} is within noise of it ({tell})"
    return f"{name}: cannot tell ({REPEATS_HINT})"


def _number(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def runner_up_note(comparison: Comparison) -> list[str]:
    """Per stage and model whose winner is within noise of (or cannot be told from) the runner-up: a warning line."""
    lines = []
    for _, part in comparison.table.groupby(["stage", "model"], sort=False):
        if len(part) < 2:
            continue
        best, second = part.iloc[0], part.iloc[1]
        if second["verdict"] == WITHIN_NOISE:
            lines.append(f"{best['stage']}: the winner ({best['group']}) is within noise of the runner-up ({second['group']}); do not pick between them on this evidence.")
        elif second["verdict"] == CANNOT_TELL:
            lines.append(f"{best['stage']}: the winner ({best['group']}) cannot be told from the runner-up ({second['group']}) with one run each; {REPEATS_HINT}.")
    return lines
