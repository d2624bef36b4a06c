"""Is the difference real? Groups of repeats, Student-t intervals, Welch comparisons, verdicts.

API (pure: numpy, scipy and pandas; no Streamlit, no MLflow). The page, the report and the
sweep's closing summary and racing all go through it:

    values = values_of(runs, summary, history, BEST_VAL_ACCURACY)   # one row per run
    comparison = compare(values, BEST_VAL_ACCURACY, margin=0.01)    # groups ranked per stage and model
    comparison.table     # comparison.csv's columns (TABLE_HEAD, the other varying params, TABLE_TAIL)
    comparison.details   # per table row: key, configuration (typed dict), run_ids, test_accuracy
    sentences(comparison), runner_up_note(comparison), explanation(comparison)   # in words (verdict_words.py)
    across = stages(comparison)          # stages.csv: per model each stage's best against the best stage
    headline(across)                     # "finetune lr 1e-6 wins overall, ...", then what it cannot know
    undecided_pairs(comparison)          # per stage, (best, contender) still within_noise / cannot_tell

A *group* is the runs of one configuration (`train.config.configuration`): every TrainConfig
param compared by its field's type (`3e-3` = `0.003`, `false` = `False`, `''` = empty),
except the repeat params (`vary`, by default seed and init_model), bookkeeping, params the run's
stage, schedule or model ignores, and params outside TrainConfig (see train/config.py). Group
names list only the params that take more than one value among the groups compared.

Per group: n, mean, standard deviation and a 95% Student-t interval of the mean. Per stage and
model the best group (highest mean; lowest for a loss) is `best`; every other group gets the
95% Welch interval of how far it falls short of the best and a verdict:
- `equivalent`: the interval lies inside ±margin (two one-sided tests at 2.5% each). It wins
  over `worse` when both hold (62 seeds, 0.000 [0.000, 0.000]): practically equal is the answer.
- `worse`: the interval excludes 0 (and is not inside the margin).
- `within_noise`: neither: undecided; `seeds_needed` per group would decide it either way.
- `cannot_tell`: either group has one run, so its spread is unknown.
Runs without a finite value (NaN, ±inf, which MLflow stores as ±1.8e308) never rank: they
are left out with a note, as are unfinished and pruned runs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import pandas as pd

from app.analysis import numbers
from app.analysis.across import STAGES_COLUMNS, Pair, Side, stages, undecided_pairs  # noqa: F401  (re-exported)
from app.analysis.intervals import (  # noqa: F401  (re-exported: the API is this module's)
    BEST,
    CANNOT_TELL,
    CONFIDENCE,
    DECIDED,
    DEFAULT_MARGIN,
    EQUIVALENT,
    POWER,
    UNDECIDED,
    VERDICTS,
    WITHIN_NOISE,
    WORSE,
    Difference,
    Summary,
    against,
    describe,
    finite,
    seeds_needed,
    verdict,
    welch,
)
from app.analysis.verdict_words import (  # noqa: F401  (re-exported: the API is this module's)
    REPEATS_COMMAND,
    REPEATS_HINT,
    SELECTION_LIMITS,
    explanation,
    headline,
    runner_up_note,
    sentences,
)
from train import config, contract

# Written once, as TrainConfig metadata (train/config.py); here for the page's "vary" choice.
REPEAT_PARAMS = config.REPEAT_PARAMS  # differ between repeats of one configuration
BOOKKEEPING_PARAMS = (*config.BOOKKEEPING_PARAMS, *config.RECORDED_PARAMS)  # where and how a run was recorded, not what was trained
PARTITION = (contract.PARAM_STAGE, contract.PARAM_MODEL)  # a verdict is against the best group of the same stage and model


@dataclass(frozen=True)
class Statistic:
    """A per-run number groups are compared on."""

    name: str
    label: str
    higher_is_better: bool
    bounds: tuple[float, float] | None = None  # the values it can take: a group's interval never reaches past them


ACCURACY_BOUNDS = (0.0, 1.0)
BEST_VAL_ACCURACY = Statistic(contract.BEST_VAL_ACCURACY, "best validation accuracy", True, ACCURACY_BOUNDS)
FINAL_VAL_ACCURACY = Statistic("final_val_accuracy", "final validation accuracy", True, ACCURACY_BOUNDS)
LOWEST_VAL_LOSS = Statistic("lowest_val_loss", "lowest validation loss", False)
STATISTICS = {s.name: s for s in (BEST_VAL_ACCURACY, FINAL_VAL_ACCURACY, LOWEST_VAL_LOSS)}


# ---------------------------------------------------------------------------------------
# Groups: the one definition


def ignored_params(vary=REPEAT_PARAMS) -> set[str]:
    """Params that never split a group whatever the run: `vary`, bookkeeping, and what is no setting."""
    return set(vary) | set(BOOKKEEPING_PARAMS)


def configurations(params: pd.Series, vary=REPEAT_PARAMS) -> pd.Series:
    """Per run (a Series of param dicts as logged): its configuration, typed (`train.config.configuration`).
    The dicts are shared between calls: read them, do not change them."""
    return params.map(lambda p: _typed(_hashable(p), tuple(vary))[0])


def group_keys(params: pd.Series, vary=REPEAT_PARAMS) -> pd.Series:
    """Per run: one text, equal for exactly the runs of one configuration, however they were logged."""
    return params.map(lambda p: _typed(_hashable(p), tuple(vary))[1])


def _hashable(params: dict) -> tuple:
    return tuple(sorted(params.items()))  # by name: names are unique, so values are never compared


@functools.lru_cache(maxsize=100_000)
def _typed(items: tuple, vary: tuple) -> tuple[dict, str]:
    """(configuration, its key) of one run, parsed once: the page asks for both of every run several times."""
    configuration = config.configuration(dict(items), vary)
    return configuration, config.key_of(configuration)


def differing_params(params: pd.Series, vary=REPEAT_PARAMS, exclude=()) -> list[str]:
    """Params (not `exclude`) that take more than one value among the runs that use them; lr first.
    A param only some runs use (decay: exponential ones) names nothing unless those runs differ in it."""
    return _differing(configurations(params, vary), exclude)


def group_labels(params: pd.Series, vary=REPEAT_PARAMS, exclude=()) -> pd.Series:
    """Short readable group names: the params that differ between the groups ("lr 1e-3, schedule cosine")."""
    return _labels(configurations(params, vary), exclude)


def _differing(configs: pd.Series, exclude=()) -> list[str]:
    seen: dict[str, set] = {}
    for configuration in configs:  # one pass: the page asks this of thousands of runs
        for name, value in configuration.items():
            seen.setdefault(name, set()).add(value if value == value else "nan")  # typed: 0.003 and 3e-3 are one float
    differing = [name for name, values in seen.items() if len(values) > 1 and name not in exclude]
    return sorted(differing, key=lambda n: (n != contract.PARAM_LR, n))


def _labels(configs: pd.Series, exclude=()) -> pd.Series:
    names = _differing(configs, exclude)
    return configs.map(lambda c: ", ".join(f"{n} {param_text(n, c[n])}" for n in names if n in c) or "all runs")


def param_text(name: str, value) -> str:
    """A param as a sentence shows it, whatever its spelling: lr as 1e-3, a bool as true, '' as (empty)."""
    value = config.parse_param(name, value) if isinstance(value, str) else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return lr_text(value) if name == contract.PARAM_LR else f"{value:g}"
    return str(value) if value != "" else "(empty)"


def lr_text(value: float) -> str:
    return numbers.format_lr(value)  # the one spelling of a rate (1e-3), as on the page


# ---------------------------------------------------------------------------------------
# Per-run values of a statistic


def values_of(runs: pd.DataFrame, summary: pd.DataFrame, history: pd.DataFrame, statistic: Statistic) -> pd.DataFrame:
    """One row per run to compare: run_id, run_name, stage, model, status, pruned, params, value,
    test_accuracy (NaN where the run has none).

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
    metrics = runs["metrics"] if "metrics" in runs else pd.Series([{}] * len(runs), index=runs.index)
    frame["test_accuracy"] = metrics.map(lambda m: m.get(contract.TEST_ACCURACY, math.nan)).astype(float)
    return frame.reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Groups ranked per stage and model


TABLE_HEAD = ["stage", "model", "lr"]
TABLE_TAIL = [
    "n", "mean", "std", "ci_low", "ci_high", "verdict", "difference", "difference_low", "difference_high",
    "seeds_needed", "group", "runs",
]  # fmt: skip
DETAILS = ["key", "configuration", "run_ids", "test_accuracy"]


@dataclass
class Comparison:
    """The ranked groups (one row per group, `table`), what was left out and why (`notes`).

    `details` has a row per table row (same index): the group's `key` (`group_keys`), its typed
    `configuration`, `run_ids` and the mean `test_accuracy` of its runs that have one (NaN if none)."""

    statistic: Statistic
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)  # the other params that vary between groups (table columns)
    margin: float = DEFAULT_MARGIN
    details: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DETAILS))


def compare(values: pd.DataFrame, statistic: Statistic = BEST_VAL_ACCURACY, vary=REPEAT_PARAMS, margin: float = DEFAULT_MARGIN) -> Comparison:
    """Groups of `values` (see `values_of`) ranked per stage and model, each with its verdict.

    Left out, with a note each: runs that are not FINISHED (their statistic is that of a partial
    run), runs a sweep's pruner stopped, and runs without a finite value of the statistic."""
    usable, notes = _usable(values, statistic)
    configs = configurations(usable["params"], vary)
    params = _differing(configs, exclude=(*PARTITION, contract.PARAM_LR))
    columns = [*TABLE_HEAD, *params, *TABLE_TAIL]
    if usable.empty:
        return Comparison(statistic, pd.DataFrame(columns=columns), notes, params, margin)
    usable = usable.assign(key=group_keys(usable["params"], vary).to_numpy(), configuration=configs.to_numpy())
    notes += _data_notes(usable)
    rows = [_ranked(part, statistic, vary, params, margin) for _, part in usable.groupby(["stage", "model"], sort=False)]
    table = pd.concat(rows, ignore_index=True)
    table = table.assign(_stage=table["stage"].map(_rank_in(contract.STAGES)), _model=table["model"].map(_rank_in(contract.MODELS)))
    table = table.sort_values(["_stage", "stage", "_model", "model", "_rank"], kind="stable").reset_index(drop=True)
    return Comparison(statistic, table[columns], notes, params, margin, table[DETAILS])


def _usable(values: pd.DataFrame, statistic: Statistic) -> tuple[pd.DataFrame, list[str]]:
    notes = []
    finished = values["status"].fillna("FINISHED") == "FINISHED" if "status" in values else pd.Series(True, index=values.index)
    if (~finished).any():
        notes.append(f"{int((~finished).sum())} run(s) not FINISHED (running, killed or failed) are left out of the comparison.")
    pruned = values["pruned"].fillna(False).astype(bool) if "pruned" in values else pd.Series(False, index=values.index)
    pruned &= finished
    if pruned.any():
        notes.append(f"{int(pruned.sum())} run(s) stopped early by the sweep's pruner are left out of the comparison.")
    value = pd.to_numeric(values["value"], errors="coerce").astype(float)
    candidates = finished & ~pruned
    missing = candidates & value.isna()
    if missing.any():
        notes.append(f"{int(missing.sum())} finished run(s) have no {statistic.label} (not logged, or NaN) and are left out of the comparison.")
    infinite = candidates & value.notna() & ~finite(value)
    if infinite.any():
        notes.append(f"{int(infinite.sum())} finished run(s) have an infinite {statistic.label} (a diverged run) and are left out of the comparison.")
    keep = candidates & ~missing & ~infinite
    usable = values[keep].assign(value=value[keep])
    if "test_accuracy" not in usable:
        usable = usable.assign(test_accuracy=math.nan)
    usable = usable.assign(stage=usable["stage"].fillna("").astype(str), model=usable["model"].fillna("").astype(str))
    return usable, notes


def _data_notes(usable: pd.DataFrame) -> list[str]:
    """Params outside TrainConfig (the data's counts) never split a group; when a group's runs logged
    different ones, its folder changed between them: say so."""
    notes = []
    for _, members in usable.groupby("key", sort=False):
        for name in sorted({n for p in members["params"] for n in p} - set(config.CONFIG_FIELDS) - set(config.RECORDED_PARAMS)):
            seen = sorted({str(p[name]) for p in members["params"] if name in p})
            if len(seen) > 1:
                where = f"{members['stage'].iloc[0]} {members['run_name'].iloc[0]}".strip()
                notes.append(f"{where}: its runs logged different {name} ({', '.join(seen)}): the data changed between them, yet they count as one configuration.")
    return notes


def _rank_in(order: tuple[str, ...]):
    """The contract's order (stages: scratch, full, head, finetune), unknown values after it."""
    return lambda value: order.index(value) if value in order else len(order)


def _ranked(part: pd.DataFrame, statistic: Statistic, vary, params: list[str], margin: float) -> pd.DataFrame:
    """The groups of one stage and model: the best first, each other against it."""
    sign = 1.0 if statistic.higher_is_better else -1.0
    labels = _labels(part["configuration"], exclude=PARTITION)
    groups = []
    for key, members in part.groupby("key", sort=False):
        configuration = members["configuration"].iloc[0]
        label = labels[members.index[0]]
        if label == "all runs" and contract.PARAM_LR in configuration:  # one configuration: still say which rate
            label = f"lr {param_text(contract.PARAM_LR, configuration[contract.PARAM_LR])}"
        tests = members["test_accuracy"][finite(members["test_accuracy"])]
        groups.append({
            "key": key, "configuration": configuration, "summary": describe(members["value"], bounds=statistic.bounds), "label": label,
            "lr": numbers.to_float(configuration.get(contract.PARAM_LR)),
            **{p: param_text(p, configuration[p]) if p in configuration else "" for p in params},
            "runs": "; ".join(members["run_name"].astype(str)), "run_ids": list(members["run_id"]),
            "test_accuracy": float(tests.mean()) if len(tests) else math.nan,
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
            **{name: group[name] for name in DETAILS},
        }  # fmt: skip
        row.update(against(best, s, statistic.higher_is_better, margin, rank == 0))
        rows.append(row)
    return pd.DataFrame(rows)
