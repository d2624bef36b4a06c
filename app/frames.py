"""Reshape runs and histories into the frames the charts and tables draw, with pandas only.

The long form everything starts from: one row per run, metric, split and epoch
(`run_id, run_name, epoch, metric, split, value`), where `val_accuracy` is the metric
`accuracy` on the split `validation`. From it: the plotted curves (smoothed, grouped over
seeds, joined across stages), the per-run summary and the learning-rate sensitivity.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from app import queries, stats
from train import contract

TRAIN, VALIDATION = "train", "validation"
VAL_PREFIX = contract.VAL_LOSS.removesuffix(contract.LOSS)  # "val_", spelled once in the contract
NO_FACET = ""
FLOAT_MAX = sys.float_info.max
MINMAX, STD = "min–max", "± std"
CI95 = "95% CI"  # the LR-sensitivity bars: the Student-t interval of the mean (app/stats.py)
REPEAT_PARAMS = stats.REPEAT_PARAMS  # what a group of repeats is: defined once, in app/stats.py


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
    return _ordered_metrics({split_metric(key)[0] for key in queries.history_keys(runs)} if not runs.empty else set())


def _ordered_metrics(present: set[str]) -> list[str]:
    first = (contract.ACCURACY, contract.LOSS, contract.LEARNING_RATE)
    preferred = [split_metric(key)[0] for key in (*first, *contract.EPOCH_METRICS)]
    lr_find = {split_metric(queries.LR_FIND_LOSS)[0], split_metric(queries.LR_FIND_LR)[0]}
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
# Curves


@dataclass
class CurveOptions:
    metric: str = contract.ACCURACY
    smoothing: float = 0.0  # EMA weight, 0 = raw
    facet: str = contract.PARAM_STAGE  # a param, or NO_FACET
    color: str = contract.PARAM_LR  # lr, or any param
    group: bool = False  # average repeats that differ only in `vary`
    vary: tuple[str, ...] = REPEAT_PARAMS
    band: str = MINMAX
    members: bool = False  # with groups: draw the member runs too
    join: bool = False  # continue a run from the run whose model it started from
    log_y: bool = False
    top: int = 0  # without averaging: draw only the `top` runs of best val accuracy (0 = every run)


@dataclass
class Curves:
    """What the curve chart draws: one row per line, split and epoch, plus stage boundaries."""

    points: pd.DataFrame
    boundaries: pd.DataFrame
    groups: pd.DataFrame = field(default_factory=pd.DataFrame)
    missing_predecessors: list[str] = field(default_factory=list)
    # The params besides the colour's and the facet's that differ between the drawn runs (`variant` of each point).
    variant_params: list[str] = field(default_factory=list)


POINT_COLUMNS = [
    "line", "label", "run_id", "lr", "lr_label", "stage", "schedule", "model", "color", "variant", "facet", "split",
    "epoch", "run_epoch", "value", "smoothed", "low", "high", "n_runs", "best", "bridge", "role",
]  # fmt: skip
# Dash patterns that stay distinct side by side: more values than this are not told apart by dash.
VARIANT_MAX = 6


def curves(history: pd.DataFrame, runs: pd.DataFrame, options: CurveOptions, all_runs: pd.DataFrame | None = None) -> Curves:
    """The plotted points of `options.metric` for `runs`.

    `all_runs` holds the runs `runs` may continue from (their predecessors, when joining).
    Each row is one point of a line; `role` is run, mean (a group's mean) or member.
    """
    all_runs = runs if all_runs is None else pd.concat([runs, all_runs]).drop_duplicates("run_id")
    info = all_runs.set_index("run_id")
    series, boundaries, missing = _series(runs, info, history, options)
    metric_rows = history[history["metric"] == options.metric]
    variant = variant_params(runs, options)
    info = info.assign(variant=variant_labels(info.reset_index(), variant).to_numpy())
    points = _attach(series, metric_rows, info, options)
    best = best_epochs(all_runs, history)
    groups = pd.DataFrame()
    if options.group and not points.empty:
        accuracy_rows = _attach(series, history[history["key"] == contract.VAL_ACCURACY], info, options)
        points, groups = _aggregate(points, accuracy_rows, series, info, options)
    else:
        points["best"] = points["epoch"] == points["run_id"].map(best) + points["offset"]
        points["role"] = "run"
    points = _mark_best_on_one_split(points)
    points["smoothed"] = _smooth(points, options.smoothing)
    if options.log_y:
        for column in ("value", "smoothed", "low", "high"):
            points[column] = points[column].where(points[column] > 0)
    points = points.sort_values(["line", "split", "epoch"], kind="stable").reset_index(drop=True)
    return Curves(points[POINT_COLUMNS], boundaries, groups, missing, variant)


def variant_params(runs: pd.DataFrame, options: CurveOptions) -> list[str]:
    """The params that tell apart runs the colour and the facet do not: those (besides lr, the colour's,
    the facet's and the repeat params) that differ between runs of one facet, e.g. `schedule` and
    `warmup_epochs` for a constant and a warm-up + cosine run of one rate. All of them when their
    combinations are few enough to dash, else the first one that is, else none."""
    training = runs[runs["kind"] != contract.KIND_SWEEP] if "kind" in runs else runs
    if training.empty:
        return []
    skip = {contract.PARAM_LR, _color_column(options.color), options.color, options.facet, *options.vary, queries.PARAM_INIT_MODEL}
    facet = (param_values(training, options.facet) if options.facet else pd.Series("", index=training.index)).to_numpy()
    names = [n for n in varying_params(training) if n not in skip and (param_values(training, n).groupby(facet).nunique() > 1).any()]
    if names and variant_labels(training, names).nunique() <= VARIANT_MAX:
        return names
    return next(([n] for n in names if param_values(training, n).nunique() <= VARIANT_MAX), [])


def variant_labels(runs: pd.DataFrame, names: list[str]) -> pd.Series:
    """Per run, its values of `names` joined ("cosine, 1"); "" without names."""
    if not names:
        return pd.Series("", index=runs.index)
    values = [param_values(runs, n) for n in names]
    return pd.concat(values, axis=1).agg(", ".join, axis=1) if len(values) > 1 else values[0]


def _series(runs, info, history, options):
    """Lines to draw: (line, position, run_id, offset, facet) rows, and the stage boundaries."""
    epochs = history.groupby("run_id")["epoch"].max() + 1 if not history.empty else pd.Series(dtype=float)
    parent = {r: p for r, p in zip(info.index, info["init_run_id"], strict=True) if p}
    facet_values = param_values(runs, options.facet) if options.facet else pd.Series("", index=runs.index)
    rows, bounds, missing = [], [], []
    continued = {parent.get(run_id) for run_id in runs["run_id"]} if options.join else set()
    for run_id, facet in zip(runs["run_id"], facet_values, strict=True):
        if run_id in continued:
            continue  # drawn as the first part of the run(s) that continue it
        chain = chain_of(run_id, parent) if options.join else [run_id]
        missing += [r for r in chain if r not in info.index]
        chain = [r for r in chain if r in info.index]
        if len(chain) > 1 and options.facet == contract.PARAM_STAGE:
            facet = " → ".join(str(info.at[r, "stage"]) for r in chain)
        offset = 0
        for position, member in enumerate(chain):
            rows.append((run_id, position, member, offset, facet))
            if position > 0:
                bounds.append((run_id, facet, offset - 0.5))
            offset += int(epochs.get(member, 0))
    series = pd.DataFrame(rows, columns=["series", "position", "run_id", "offset", "facet"])
    boundaries = pd.DataFrame(bounds, columns=["series", "facet", "epoch"]).drop_duplicates(["facet", "epoch"])
    return series, boundaries, sorted(set(missing))


def _attach(series: pd.DataFrame, rows: pd.DataFrame, info: pd.DataFrame, options: CurveOptions) -> pd.DataFrame:
    """Metric rows joined onto the lines, epochs shifted by each part's offset, with a bridge
    point (the previous part's last point) so a continued curve has no gap."""
    empty = pd.DataFrame(columns=[*POINT_COLUMNS, "series", "position", "offset"])
    if series.empty or rows.empty:
        return empty
    merged = series.merge(rows[["run_id", "split", "epoch", "value"]], on="run_id", how="inner")
    merged["run_epoch"] = merged["epoch"]
    merged["epoch"] = merged["epoch"] + merged["offset"]
    merged["bridge"] = False
    later = series[series["position"] > 0]
    if not later.empty:
        previous = series.assign(position=series["position"] + 1).merge(later[["series", "position", "run_id"]], on=["series", "position"], suffixes=("", "_next"))
        tails = previous.merge(rows[["run_id", "split", "epoch", "value"]], on="run_id")
        tails["run_epoch"] = tails["epoch"]  # the bridge is the previous run's last point
        tails["epoch"] = tails["epoch"] + tails["offset"]
        tails = tails.loc[tails.groupby(["series", "position", "split"])["epoch"].idxmax()]
        tails = tails.assign(run_id=tails["run_id_next"], bridge=True)
        offsets = later.set_index(["series", "position"])["offset"]
        tails["offset"] = [offsets.get((s, p), 0) for s, p in zip(tails["series"], tails["position"], strict=True)]
        merged = pd.concat([merged, tails[merged.columns]], ignore_index=True)
    if merged.empty:
        return empty
    merged["line"] = merged["series"] + "#" + merged["position"].astype(str)
    attributes = info.loc[merged["run_id"]]
    merged["label"] = attributes["run_name"].to_numpy()
    for column in ("lr", "lr_label", "stage", "schedule", "model", "variant"):
        merged[column] = attributes[column].to_numpy()
    merged["color"] = param_values(attributes.reset_index(), _color_column(options.color)).to_numpy()
    merged["low"] = merged["high"] = np.nan
    merged["n_runs"] = 1
    return merged


def _color_column(color: str) -> str:
    return "lr_label" if color == contract.PARAM_LR else color


def _group_keys(info: pd.DataFrame, vary) -> pd.Series:
    """Per run: its group of repeats (`stats.group_keys`, the one definition)."""
    return stats.group_keys(info["params"], vary)


def _group_labels(info: pd.DataFrame, vary) -> pd.Series:
    """Short readable group names: the params that differ between groups."""
    varying = [n for n in varying_params(info.reset_index()) if n not in stats.ignored_params(vary)]
    return info["params"].map(lambda params: " ".join(f"{n}={params.get(n, '')}" for n in varying) or "all runs")


ATTRIBUTES = ["label", "lr", "lr_label", "stage", "schedule", "model", "color", "variant", "facet"]


def _aggregate(points, accuracy_rows, series, info, options):
    """Repeats averaged: one mean line per group and part, a band (min–max or ± std), best epoch of the mean."""
    keys, labels = _group_keys(info, options.vary), _group_labels(info, options.vary)
    per_series = series.assign(key=series["run_id"].map(keys), name=series["run_id"].map(labels))
    chains = per_series.sort_values(["series", "position"]).groupby("series", sort=False).agg(key=("key", " | ".join), name=("name", " → ".join))
    codes, _ = pd.factorize(chains["key"])
    group_of = pd.Series([f"g{code}" for code in codes], index=chains.index)
    group_name = dict(zip(group_of, chains["name"], strict=True))
    points = points.assign(group=points["series"].map(group_of))
    by = ["group", "position", "split", "epoch"]
    stats = points.groupby(by)["value"].agg(["mean", "min", "max", "std"]).reset_index()
    stats["bridge"] = points.groupby(by)["bridge"].all().to_numpy()
    stats["run_epoch"] = points.groupby(by)["run_epoch"].max().to_numpy()
    attributes = points.drop_duplicates(["group", "position"]).set_index(["group", "position"])[ATTRIBUTES]
    mean = stats.join(attributes, on=["group", "position"]).rename(columns={"mean": "value"})
    if options.band == STD:
        spread = mean["std"].fillna(0)
        mean["low"], mean["high"] = mean["value"] - spread, mean["value"] + spread
    else:
        mean["low"], mean["high"] = mean["min"], mean["max"]
    mean["n_runs"] = mean["group"].map(points.groupby("group")["series"].nunique())
    mean["line"] = mean["group"] + "#" + mean["position"].astype(str)
    mean["label"] = mean["group"].map(group_name)
    mean["run_id"] = ""
    mean["role"] = "mean"
    accuracy = accuracy_rows.assign(group=accuracy_rows["series"].map(group_of))
    accuracy = accuracy[accuracy["split"] == VALIDATION].groupby(["group", "position", "epoch"])["value"].mean().dropna().reset_index()
    best = accuracy.loc[accuracy.groupby(["group", "position"])["value"].idxmax()] if not accuracy.empty else accuracy
    best_epoch = {(g, p): e for g, p, e in zip(best["group"], best["position"], best["epoch"], strict=True)} if not best.empty else {}
    mean["best"] = [best_epoch.get((g, p)) == e for g, p, e in zip(mean["group"], mean["position"], mean["epoch"], strict=True)]
    frames = [mean]
    if options.members:
        frames.append(points.assign(role="member", best=False, line=points["line"] + "~member"))
    groups = pd.DataFrame({"group": group_of.map(group_name), "run_id": group_of.index})
    groups["run_name"] = groups["run_id"].map(info["run_name"])
    groups = groups.groupby("group", sort=True).agg(n_runs=("run_id", "size"), runs=("run_name", list), run_ids=("run_id", list)).reset_index()
    return pd.concat(frames, ignore_index=True), groups


def _mark_best_on_one_split(points: pd.DataFrame) -> pd.DataFrame:
    """Best-epoch marks sit on the validation curve; on the train curve only for lines without one."""
    if points.empty:
        return points
    has_validation = points["line"].isin(set(points.loc[points["split"] == VALIDATION, "line"]))
    keep = (points["split"] == VALIDATION) | ~has_validation
    points["best"] = points["best"].astype(bool) & keep & ~points["bridge"].astype(bool)
    return points


def _smooth(points: pd.DataFrame, weight: float) -> pd.Series:
    if points.empty:
        return pd.Series(dtype=float)
    ordered = points.sort_values(["line", "split", "epoch"], kind="stable")
    return ema(ordered["value"], weight, [ordered["line"], ordered["split"]]).reindex(points.index)


# ---------------------------------------------------------------------------------------
# Per-run summary and learning-rate sensitivity


SUMMARY_COLUMNS = [
    "run", "lr", "stage", "model", "schedule", "seed", "state", "best_val_accuracy", "best_epoch",
    "final_accuracy", "final_val_accuracy", "final_loss", "final_val_loss", "gap", "epochs",
    "duration_s", "images_per_second", "last_activity", "stop_reason", "experiment", "url", "run_id",
]  # fmt: skip


def last_activity(runs: pd.DataFrame, history: pd.DataFrame) -> pd.Series:
    """Per run, milliseconds: the newest metric timestamp, else the start time."""
    newest = history.groupby("run_id")["timestamp"].max() if not history.empty else pd.Series(dtype=float)
    start = runs.set_index("run_id")["start_time"].astype(float)
    return newest.reindex(start.index).astype(float).fillna(start)


def run_states(runs: pd.DataFrame, history: pd.DataFrame, now_ms: float, stale_after_s: float) -> pd.Series:
    """MLflow's status, or STALE for a RUNNING run that has logged nothing for `stale_after_s`."""
    activity = last_activity(runs, history)
    status = runs.set_index("run_id")["status"]
    stale = (status == "RUNNING") & ((now_ms - activity) > stale_after_s * 1000)
    return status.where(~stale, "STALE")


def summary(runs: pd.DataFrame, history: pd.DataFrame, *, now_ms: float, stale_after_s: float, ui_base: str) -> pd.DataFrame:
    """One row per run: best val accuracy and its epoch, final values, gap, duration, throughput, state, link.

    `gap` is train minus validation accuracy at the best epoch (the epoch one would keep).
    """
    if runs.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    index = runs["run_id"]
    wide = history.pivot_table(index=["run_id", "epoch"], columns="key", values="value", aggfunc="last") if not history.empty else pd.DataFrame()
    last = wide.groupby(level="run_id").last() if not wide.empty else pd.DataFrame()

    def final(key):
        return last[key].reindex(index).to_numpy() if key in last else np.full(len(index), np.nan)

    best_epoch = best_epochs(runs, history).reindex(index)
    logged_best = runs["metrics"].map(lambda m: m.get(contract.BEST_VAL_ACCURACY, math.nan)).astype(float)
    derived_best = history[history["key"] == contract.VAL_ACCURACY].groupby("run_id")["value"].max().reindex(index) if not history.empty else pd.Series(np.nan, index=index)
    best_value = logged_best.to_numpy()
    best_value = np.where(np.isnan(best_value), derived_best.to_numpy(), best_value)

    def at_best(key):
        if wide.empty or key not in wide:
            return np.full(len(index), np.nan)
        values = wide[key]
        return np.array([values.get((run_id, int(epoch)), np.nan) if not math.isnan(epoch) else np.nan for run_id, epoch in zip(index, best_epoch, strict=True)])

    epochs = history[history["key"].isin(contract.EPOCH_METRICS)].groupby("run_id")["epoch"].max().reindex(index) + 1 if not history.empty else pd.Series(np.nan, index=index)
    throughput = history[history["key"] == contract.IMAGES_PER_SECOND].groupby("run_id")["value"].median().reindex(index) if not history.empty else pd.Series(np.nan, index=index)
    end = runs["end_time"].astype(float).fillna(now_ms)
    frame = pd.DataFrame({
        "run": runs["run_name"].to_numpy(),
        "lr": runs["lr"].to_numpy(),
        "stage": runs["stage"].to_numpy(),
        "model": runs["model"].to_numpy(),
        "schedule": runs["schedule"].to_numpy(),
        "seed": runs["seed"].to_numpy(),
        "state": run_states(runs, history, now_ms, stale_after_s).reindex(index).to_numpy(),
        "best_val_accuracy": best_value,
        "best_epoch": best_epoch.to_numpy(),
        "final_accuracy": final(contract.ACCURACY),
        "final_val_accuracy": final(contract.VAL_ACCURACY),
        "final_loss": final(contract.LOSS),
        "final_val_loss": final(contract.VAL_LOSS),
        "gap": at_best(contract.ACCURACY) - at_best(contract.VAL_ACCURACY),
        "epochs": epochs.to_numpy(),
        "duration_s": ((end - runs["start_time"].astype(float)) / 1000).to_numpy(),
        "images_per_second": throughput.to_numpy(),
        "last_activity": pd.to_datetime(last_activity(runs, history).reindex(index).to_numpy(), unit="ms", utc=True),
        "stop_reason": runs["stop_reason"].to_numpy(),
        "experiment": runs["experiment"].to_numpy(),
        "url": [queries.run_url(ui_base, e, r) for e, r in zip(runs["experiment_id"], index, strict=True)],
        "run_id": index.to_numpy(),
    })
    return frame[SUMMARY_COLUMNS]


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
    frame["lr_label"] = frame["lr"].map(queries.format_lr)
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
    finder = history[history["key"].isin([queries.LR_FIND_LOSS, queries.LR_FIND_LR])]
    if finder.empty:
        return pd.DataFrame(columns=columns)
    wide = finder.pivot_table(index=["run_id", "epoch"], columns="key", values="value", aggfunc="last").reset_index()
    if queries.LR_FIND_LOSS not in wide or queries.LR_FIND_LR not in wide:
        return pd.DataFrame(columns=columns)
    info = runs.set_index("run_id")
    wide = wide.rename(columns={"epoch": "step", queries.LR_FIND_LOSS: "loss", queries.LR_FIND_LR: "lr"})
    wide["run_name"] = wide["run_id"].map(info["run_name"])
    wide["suggested_lr"] = wide["run_id"].map(info["metrics"].map(lambda m: m.get(queries.SUGGESTED_LR, math.nan)))
    wide = wide.dropna(subset=["lr", "loss"])
    wide = wide[(wide["lr"] > 0) & np.isfinite(wide["loss"])]
    return wide[columns].reset_index(drop=True)


# Filters of the page: setting -> column of the runs frame.
FILTER_COLUMNS = {"stage": "stage", "model": "model", "schedule": "schedule", "lr": "lr_label", "status": "status", "data": "data", "sweep": "sweep"}


def filter_options(runs: pd.DataFrame, setting: str) -> list[str]:
    """The values a filter offers: those of the runs, less a sweep's parent run (no training
    params: its empty stage or data set would be offered as a choice of its own)."""
    runs = runs[runs["kind"] != contract.KIND_SWEEP]
    values = runs[FILTER_COLUMNS[setting]].fillna("").astype(str).unique().tolist()
    if setting == "lr":
        return sorted(values, key=lambda v: queries._to_float(v) if v else math.inf)
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
