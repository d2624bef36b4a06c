"""Reshape runs and histories into the frames the charts and tables draw, with pandas only.

The long form everything starts from: one row per run, metric, split and epoch
(`run_id, run_name, epoch, metric, split, value`), where `val_accuracy` is the metric
`accuracy` on the split `validation`. From it: chains of runs that continue one another,
the per-run summary, the learning-rate sensitivity and the page's filters. The plotted
curves themselves (smoothed, grouped over seeds, joined across stages) are in
app/analysis/curve_data.py.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd

from app.analysis import stats
from app.data import histories, run_search, store
from train import contract

TRAIN, VALIDATION = "train", "validation"
VAL_PREFIX = contract.VAL_LOSS.removesuffix(contract.LOSS)  # "val_", spelled once in the contract
NO_FACET = ""
FLOAT_MAX = sys.float_info.max
MINMAX, STD = "min–max", "± std"
CI95 = "95% CI"  # the LR-sensitivity bars: the Student-t interval of the mean (app/analysis/stats.py)
REPEAT_PARAMS = stats.REPEAT_PARAMS  # what a group of repeats is: defined once, in app/analysis/stats.py


def split_metric(key: str) -> tuple[str, str]:
    """`val_loss` -> (`loss`, validation); `loss` -> (`loss`, train)."""
    if key.startswith(VAL_PREFIX) and len(key) > len(VAL_PREFIX):
        return key[len(VAL_PREFIX) :], VALIDATION
    return key, TRAIN


def tidy_history(raw: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Long form: run_id, run_name, epoch, metric, split, value, timestamp, key."""
    columns = ["run_id", "run_name", "epoch", "metric", "split", "value", "timestamp", "key"]
    if raw.empty:
        return pd.DataFrame(columns=columns).astype({"epoch": "int64", "value": float, "timestamp": "int64"})
    names = dict(zip(runs["run_id"], runs["run_name"], strict=True))
    keys = raw["key"].unique()
    split = {key: split_metric(key) for key in keys}
    frame = raw.rename(columns={"step": "epoch"})
    frame = frame.assign(
        run_name=frame["run_id"].map(names).fillna(frame["run_id"]),
        metric=frame["key"].map(lambda key: split[key][0]),
        split=frame["key"].map(lambda key: split[key][1]),
    )
    # MLflow stores an infinite value as ±1.8e308 (the largest float): one such point would stretch
    # every chart's y axis flat, so it is skipped like NaN.
    frame["value"] = frame["value"].where(frame["value"].abs() < FLOAT_MAX)
    return frame[columns].reset_index(drop=True)


def chart_metrics(history: pd.DataFrame) -> list[str]:
    """Metrics that can be drawn per epoch, the contract's first (accuracy, loss, learning rate)."""
    return _ordered_metrics(set(history["metric"].unique()) if not history.empty else set())


def logged_metrics(runs: pd.DataFrame) -> list[str]:
    """The same as `chart_metrics` of the runs' histories, from the run search alone (no history read)."""
    return _ordered_metrics({split_metric(key)[0] for key in histories.history_keys(runs)} if not runs.empty else set())


def _ordered_metrics(present: set[str]) -> list[str]:
    first = (contract.ACCURACY, contract.LOSS, contract.LEARNING_RATE)
    preferred = [split_metric(key)[0] for key in (*first, *contract.EPOCH_METRICS)]
    lr_find = {split_metric(histories.LR_FIND_LOSS)[0], split_metric(histories.LR_FIND_LR)[0]}
    ordered = [m for m in dict.fromkeys(preferred) if m in present]
    return ordered + sorted(present - set(ordered) - lr_find)


def ema(values: pd.Series, weight: float, groups: list[pd.Series] | None = None) -> pd.Series:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start, NaN-aware;
    with `groups`, one average per group (each in the order `values` has)."""
    values = values.astype(float)
    if weight <= 0:
        return values
    series = values.groupby(groups, sort=False) if groups is not None else values
    smoothed = series.ewm(alpha=1.0 - weight, adjust=True, ignore_na=True).mean()
    if groups is not None:
        smoothed = smoothed.reset_index(level=list(range(len(groups))), drop=True)
    return smoothed.reindex(values.index).where(values.notna())


def param_values(runs: pd.DataFrame, name: str) -> pd.Series:
    """A param (or a contract column such as `lr_label`) for every run, as text; missing is ""."""
    if name in runs.columns and name not in ("params", "tags", "metrics"):
        return runs[name].fillna("").astype(str)
    return runs["params"].map(lambda params: str(params.get(name, "")))


def varying_params(runs: pd.DataFrame) -> list[str]:
    """Params whose value differs between the runs, the contract's first."""
    names = sorted({name for params in runs["params"] for name in params})
    varying = [name for name in names if param_values(runs, name).nunique() > 1]
    first = [contract.PARAM_LR, contract.PARAM_STAGE, contract.PARAM_MODEL, contract.PARAM_SCHEDULE]
    return [n for n in first if n in varying] + [n for n in varying if n not in first]


def best_epochs(runs: pd.DataFrame, history: pd.DataFrame) -> pd.Series:
    """Each run's best epoch: the logged `best_epoch`, else the first epoch of highest val accuracy."""
    logged = runs.set_index("run_id")["metrics"].map(lambda m: m.get(contract.BEST_EPOCH, math.nan))
    val = history[history["key"] == contract.VAL_ACCURACY].dropna(subset=["value"])
    derived = val.loc[val.groupby("run_id")["value"].idxmax(), ["run_id", "epoch"]].set_index("run_id")["epoch"] if not val.empty else pd.Series(dtype=float)
    best = logged.astype(float).fillna(derived.astype(float))
    return best


# ---------------------------------------------------------------------------------------
# Chains: a run that started from another run's model, drawn as one curve


def chain_of(run_id: str, parent: dict[str, str]) -> list[str]:
    """[first run, ..., run_id], following `init_run_id` back; stops at a missing run or a loop."""
    chain = [run_id]
    while (previous := parent.get(chain[0])) and previous not in chain:
        chain.insert(0, previous)
    return chain


# ---------------------------------------------------------------------------------------
# Per-run summary and learning-rate sensitivity


SUMMARY_COLUMNS = [
    "run", "lr", "stage", "model", "schedule", "seed", "state", "best_val_accuracy", "best_epoch",
    "final_accuracy", "final_val_accuracy", "final_loss", "final_val_loss", "gap", "epochs",
    "duration_s", "images_per_second", "last_activity", "stop_reason", "experiment", "url", "run_id",
]  # fmt: skip


# What a run's summary reads of its history when it lacks the run-level metrics (a running run, a
# run of a version before they were logged): train and validation accuracy (best, gap), images/s and
# loss (epochs, also of a run without accuracy).
SUMMARY_HISTORY_KEYS = (contract.ACCURACY, contract.VAL_ACCURACY, contract.IMAGES_PER_SECOND, contract.LOSS)


def needs_history(runs: pd.DataFrame) -> pd.Series:
    """Per run: whether its summary needs its history. A finished run of this version logged every
    run-level metric its per-epoch ones call for (`contract.SUMMARY_METRICS`): it needs none."""

    def lacking(keys) -> bool:
        keys = set(keys)
        if not keys & set(contract.EPOCH_METRICS):
            return False  # nothing per epoch to read
        needed = {contract.BEST_VAL_ACCURACY, contract.BEST_EPOCH, contract.EPOCHS_TRAINED}
        needed |= {contract.ACCURACY_AT_BEST} if contract.ACCURACY in keys else set()
        needed |= {contract.MEDIAN_IMAGES_PER_SECOND} if contract.IMAGES_PER_SECOND in keys else set()
        return not needed <= keys

    return runs["metric_keys"].map(lacking).astype(bool) if not runs.empty else pd.Series(dtype=bool)


def _logged(runs: pd.DataFrame, key: str) -> pd.Series:
    """A run-level metric of every run (its latest value), NaN where not logged; indexed by run_id."""
    return pd.Series(runs["metrics"].map(lambda m: m.get(key, math.nan)).astype(float).to_numpy(), index=runs["run_id"].to_numpy())


def last_activity(runs: pd.DataFrame, history: pd.DataFrame) -> pd.Series:
    """Per run, milliseconds: the newest of its heartbeat (the tag its process writes while it lives),
    its latest update in the run search (start, end, newest latest-metric), and its history where read."""
    heartbeat = runs["tags"].map(lambda tags: run_search.to_float(tags.get(contract.TAG_HEARTBEAT))).astype(float)
    known = pd.DataFrame({"start": runs["start_time"].astype(float), "update": runs["last_update"].astype(float), "heartbeat": heartbeat})
    activity = pd.Series(known.max(axis=1, skipna=True).to_numpy(), index=runs["run_id"].to_numpy())
    if not history.empty:
        newest = history.groupby("run_id")["timestamp"].max().astype(float).reindex(activity.index)
        activity = pd.concat([activity, newest], axis=1).max(axis=1, skipna=True)
    return activity


def run_states(runs: pd.DataFrame, history: pd.DataFrame, now_ms: float, stale_after_s: float) -> pd.Series:
    """MLflow's status, or STALE for a RUNNING run that has shown no sign of life for `stale_after_s`."""
    activity = last_activity(runs, history)
    status = runs.set_index("run_id")["status"]
    stale = (status == "RUNNING") & ((now_ms - activity) > stale_after_s * 1000)
    return status.where(~stale, "STALE")


def summary(runs: pd.DataFrame, history: pd.DataFrame, *, now_ms: float, stale_after_s: float, ui_base: str) -> pd.DataFrame:
    """One row per run: best val accuracy and its epoch, final values, gap, duration, throughput, state, link.

    From the run search (final values are each key's latest value; the rest `contract.SUMMARY_METRICS`);
    `history` is needed only for the runs `needs_history` names, and only its `SUMMARY_HISTORY_KEYS`.
    `gap` is train minus validation accuracy at the best epoch (the epoch one would keep).
    """
    if runs.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    index = runs["run_id"]
    history = history[history["run_id"].isin(set(index))] if not history.empty else history
    read = _from_history(runs, history)
    logged_best = _logged(runs, contract.BEST_VAL_ACCURACY)
    best_value = logged_best.fillna(read["best"]) if not read.empty else logged_best
    best_epoch = best_epochs(runs, history).reindex(index)
    gap = _logged(runs, contract.ACCURACY_AT_BEST) - logged_best
    epochs = _logged(runs, contract.EPOCHS_TRAINED)
    throughput = _logged(runs, contract.MEDIAN_IMAGES_PER_SECOND)
    if not read.empty:  # a run without the run-level metrics: from its history
        gap, epochs, throughput = gap.fillna(read["gap"]), epochs.fillna(read["epochs"]), throughput.fillna(read["throughput"])
    end = runs["end_time"].astype(float).fillna(now_ms)
    frame = pd.DataFrame({
        "run": runs["run_name"].to_numpy(),
        "lr": runs["lr"].to_numpy(),
        "stage": runs["stage"].to_numpy(),
        "model": runs["model"].to_numpy(),
        "schedule": runs["schedule"].to_numpy(),
        "seed": runs["seed"].to_numpy(),
        "state": run_states(runs, history, now_ms, stale_after_s).reindex(index).to_numpy(),
        "best_val_accuracy": best_value.reindex(index).to_numpy(),
        "best_epoch": best_epoch.to_numpy(),
        **{f"final_{key}": _logged(runs, key).to_numpy() for key in (contract.ACCURACY, contract.VAL_ACCURACY, contract.LOSS, contract.VAL_LOSS)},
        "gap": gap.reindex(index).to_numpy(),
        "epochs": epochs.reindex(index).to_numpy(),
        "duration_s": ((end - runs["start_time"].astype(float)) / 1000).to_numpy(),
        "images_per_second": throughput.reindex(index).to_numpy(),
        "last_activity": pd.to_datetime(last_activity(runs, history).reindex(index).to_numpy(), unit="ms", utc=True),
        "stop_reason": runs["stop_reason"].to_numpy(),
        "experiment": runs["experiment"].to_numpy(),
        "url": [store.run_url(ui_base, e, r) for e, r in zip(runs["experiment_id"], index, strict=True)],
        "run_id": index.to_numpy(),
    })  # fmt: skip
    return frame[SUMMARY_COLUMNS]


def _from_history(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Per run in `history`: best val accuracy, gap at the best epoch, epochs, median images/s."""
    if history.empty:
        return pd.DataFrame(columns=["best", "gap", "epochs", "throughput"])
    wide = history.pivot_table(index=["run_id", "epoch"], columns="key", values="value", aggfunc="last")
    best_epoch = best_epochs(runs[runs["run_id"].isin(set(history["run_id"]))], history)

    def at_best(key) -> pd.Series:
        if key not in wide:
            return pd.Series(np.nan, index=best_epoch.index)
        values = wide[key]
        return pd.Series([values.get((run_id, int(epoch)), np.nan) if not math.isnan(epoch) else np.nan for run_id, epoch in best_epoch.items()], index=best_epoch.index)

    def per_run(key, how) -> pd.Series:
        rows = history[history["key"] == key]
        return rows.groupby("run_id")["value"].agg(how) if not rows.empty else pd.Series(dtype=float)

    epochs = history[history["key"].isin(contract.EPOCH_METRICS)].groupby("run_id")["epoch"].max() + 1
    found = pd.DataFrame({"gap": at_best(contract.ACCURACY) - at_best(contract.VAL_ACCURACY)})
    found["best"] = per_run(contract.VAL_ACCURACY, "max")
    found["epochs"] = epochs.astype(float)
    found["throughput"] = per_run(contract.IMAGES_PER_SECOND, "median")
    return found.astype(float)


SENSITIVITY_COLUMNS = ["stage", "model", "line", "lr", "lr_label", "measure", "mean", "ci_low", "ci_high", "min", "max", "n_runs", "n_label"]
SENSITIVITY_MEASURES = ("best_val_accuracy", "gap")


def sensitivity(table: pd.DataFrame, runs: pd.DataFrame, vary=REPEAT_PARAMS) -> pd.DataFrame:
    """Best val accuracy and gap against lr, per group of repeats (`stats.group_keys`): the mean,
    its 95% Student-t interval, the min–max and n. One line per stage and model (and per value of
    the other params that vary within them, a schedule say). FINISHED runs only, as in the verdicts:
    a running run's best is not its last word."""
    usable = table[(table["state"] == "FINISHED") & table["lr"].notna()]
    if usable.empty:
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    known = runs.set_index("run_id")["params"]
    params = usable["run_id"].map(lambda run_id: known.get(run_id, {}))
    per_rate = (*vary, contract.PARAM_LR)
    usable = usable.assign(key=stats.group_keys(params, vary).to_numpy(), line=_sensitivity_lines(usable, params, per_rate))
    long = usable.melt(id_vars=["key", "line", "stage", "model", "lr"], value_vars=list(SENSITIVITY_MEASURES), var_name="measure").dropna(subset=["value"])
    if long.empty:
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    rows = []
    for (_, measure), part in long.groupby(["key", "measure"], sort=False):
        summary = stats.describe(part["value"])
        first = part.iloc[0]
        rows.append({
            "stage": first["stage"], "model": first["model"], "line": first["line"], "lr": first["lr"], "measure": measure,
            "mean": summary.mean, "ci_low": summary.ci_low, "ci_high": summary.ci_high,
            "min": part["value"].min(), "max": part["value"].max(), "n_runs": summary.n,
        })  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["lr_label"] = frame["lr"].map(run_search.format_lr)
    frame["n_label"] = "n=" + frame["n_runs"].astype(str)
    return frame.sort_values(["line", "measure", "lr"], kind="stable")[SENSITIVITY_COLUMNS].reset_index(drop=True)


def _sensitivity_lines(usable: pd.DataFrame, params: pd.Series, per_rate) -> list[str]:
    """`stage · model`, and the params other than lr that differ within them (`· schedule cosine`)."""
    lines = pd.Series("", index=usable.index)
    for _, part in usable.groupby(["stage", "model"], sort=False):
        labels = stats.group_labels(params[part.index], per_rate, exclude=stats.PARTITION)
        base = part["stage"].astype(str) + " · " + part["model"].astype(str)
        lines[part.index] = base.where(labels == "all runs", base + " · " + labels)
    return lines.tolist()


def lr_finder(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Loss against learning rate for lr-finder runs: run_name, step, lr, loss, suggested_lr."""
    columns = ["run_id", "run_name", "step", "lr", "loss", "suggested_lr"]
    finder = history[history["key"].isin([histories.LR_FIND_LOSS, histories.LR_FIND_LR])]
    if finder.empty:
        return pd.DataFrame(columns=columns)
    wide = finder.pivot_table(index=["run_id", "epoch"], columns="key", values="value", aggfunc="last").reset_index()
    if histories.LR_FIND_LOSS not in wide or histories.LR_FIND_LR not in wide:
        return pd.DataFrame(columns=columns)
    info = runs.set_index("run_id")
    wide = wide.rename(columns={"epoch": "step", histories.LR_FIND_LOSS: "loss", histories.LR_FIND_LR: "lr"})
    wide["run_name"] = wide["run_id"].map(info["run_name"])
    wide["suggested_lr"] = wide["run_id"].map(info["metrics"].map(lambda m: m.get(histories.SUGGESTED_LR, math.nan)))
    wide = wide.dropna(subset=["lr", "loss"])
    wide = wide[(wide["lr"] > 0) & np.isfinite(wide["loss"])]
    return wide[columns].reset_index(drop=True)


def chance_level(runs: pd.DataFrame) -> float | None:
    """1 / classes when every run that logged `num_classes` logged the same number; else None."""
    counts = {params.get(contract.PARAM_NUM_CLASSES) for params in runs["params"]} - {None, ""} if not runs.empty else set()
    if len(counts) != 1:
        return None
    try:
        classes = int(float(counts.pop()))
    except ValueError:
        return None
    return 1.0 / classes if classes >= 2 else None


def at_chance(best_accuracy: float, chance: float | None) -> bool:
    """Whether a run's best validation accuracy never left chance: within 10% (and 0.01) of 1 / classes."""
    return chance is not None and not math.isnan(best_accuracy) and best_accuracy <= chance * 1.1 + 0.01


# Filters of the page: setting -> column of the runs frame.
FILTER_COLUMNS = {"stage": "stage", "model": "model", "schedule": "schedule", "lr": "lr_label", "status": "status", "data": "data", "sweep": "sweep"}


def filter_options(runs: pd.DataFrame, setting: str) -> list[str]:
    """The values a filter offers: those of the runs, less a sweep's parent run (no training
    params: its empty stage or data set would be offered as a choice of its own)."""
    runs = runs[runs["kind"] != contract.KIND_SWEEP]
    values = runs[FILTER_COLUMNS[setting]].fillna("").astype(str).unique().tolist()
    if setting == "lr":
        return sorted(values, key=lambda v: run_search.to_float(v) if v else math.inf)
    if setting == "stage":
        rank = {s: i for i, s in enumerate(contract.STAGES)}
        return sorted(values, key=lambda v: (rank.get(v, len(rank)), v))
    return sorted(values)


def apply_filters(runs: pd.DataFrame, chosen: dict[str, list[str]]) -> pd.DataFrame:
    """Runs whose value is among the chosen ones for every setting (an empty choice keeps all)."""
    keep = pd.Series(True, index=runs.index)
    for setting, values in chosen.items():
        if values:
            keep &= runs[FILTER_COLUMNS[setting]].fillna("").astype(str).isin(values)
    return runs[keep]
