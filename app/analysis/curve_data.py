"""The plotted curves: runs' histories as lines, smoothed, grouped over seeds, joined across stages.

Split out of app/analysis/frames.py (which keeps the long form, chains, the per-run summary, the
learning-rate sensitivity and the filters); the charts draw what `curves` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from app.analysis import stats
from app.analysis.frames import (
    MINMAX,
    REPEAT_PARAMS,
    STD,
    VALIDATION,
    best_epochs,
    chain_of,
    ema,
    param_values,
    varying_params,
)
from train import contract


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
    # Only the runs that drew a line tell lines apart: a failed run's params make no legend.
    variant = variant_params(runs[runs["run_id"].isin(set(metric_rows["run_id"]))], options)
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
    points = _best_of_last_part(points)
    points["smoothed"] = _smooth(points, options.smoothing)
    if options.log_y:
        for column in ("value", "smoothed", "low", "high"):
            points[column] = points[column].where(points[column] > 0)
    points = points.sort_values(["line", "split", "epoch"], kind="stable").reset_index(drop=True)
    return Curves(points[POINT_COLUMNS], boundaries, groups, missing, variant)


def has_repeats(runs: pd.DataFrame, vary=REPEAT_PARAMS) -> bool:
    """Whether some configuration has more than one training run (seeds): then the page draws
    groups (one mean line and band each) unless told otherwise."""
    training = runs[runs["kind"].isin([contract.KIND_TRAIN, ""])] if "kind" in runs else runs
    return bool(len(training) > 1 and stats.group_keys(training["params"], vary).duplicated().any())


def variant_params(runs: pd.DataFrame, options: CurveOptions) -> list[str]:
    """The params that tell apart runs the colour and the facet do not: those (besides lr, the colour's,
    the facet's and the repeat params) that differ between runs of one facet, e.g. `schedule` and
    `warmup_epochs` for a constant and a warm-up + cosine run of one rate. All of them when their
    combinations are few enough to dash, else the first one that is, else none."""
    training = runs[runs["kind"] != contract.KIND_SWEEP] if "kind" in runs else runs
    if training.empty:
        return []
    skip = {contract.PARAM_LR, _color_column(options.color), options.color, options.facet, *stats.ignored_params(options.vary), contract.PARAM_INIT_MODEL}
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
    for run_id, facet in zip(runs["run_id"], facet_values, strict=True):
        # A run that others continue is drawn in its own column too (its stage keeps its best), and
        # again as the first part of each joined curve.
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
    """Short readable group names: the params that differ between groups, by type (`stats.differing_params`:
    `3e-3` and `0.003` are one value; a param a run's stage or schedule ignores names nothing)."""
    names = stats.differing_params(info["params"], vary)
    configurations = stats.configurations(info["params"], vary)
    return configurations.map(lambda c: " ".join(f"{n}={stats.param_text(n, c[n])}" for n in names if n in c) or "all runs")


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


def _best_of_last_part(points: pd.DataFrame) -> pd.DataFrame:
    """On a joined curve only its last run's best point is marked (and labelled): the earlier parts'
    bests are marked in their own stage's column."""
    if points.empty:
        return points
    parts = points["line"].astype(str).str.rsplit("#", n=1)
    curve, position = parts.str[0], pd.to_numeric(parts.str[1], errors="coerce").fillna(0)
    points["best"] = points["best"] & (position == position.groupby(curve).transform("max"))
    return points


def _smooth(points: pd.DataFrame, weight: float) -> pd.Series:
    if points.empty:
        return pd.Series(dtype=float)
    ordered = points.sort_values(["line", "split", "epoch"], kind="stable")
    return ema(ordered["value"], weight, [ordered["line"], ordered["split"]]).reindex(points.index)
