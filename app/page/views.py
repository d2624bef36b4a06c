"""Everything the page shows, computed without Streamlit: the frames and their charts.

The page lays these out; the report command and the tests build the very same objects, so
a report shows what the page shows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from app.analysis import curve_data, frames, numbers, stats
from app.charts import builders as charts
from app.charts import colors as palette
from app.charts import forest, spec
from app.data import histories
from train import contract

LEARNING_RATE = frames.split_metric(contract.LEARNING_RATE)[0]
# With repeats drawn as groups, each mean line is that of at most this many of its runs (the lowest
# seeds), and each chart column draws at most this many groups (the best by mean best val accuracy):
# the curves of 10,000 runs read as a few hundred histories. The verdicts use every run.
GROUP_RUNS_DRAWN = 10
GROUPS_DRAWN = 12
# A group's label and its verdict measure different things, and a reader meets both numbers.
GROUP_LABEL_NOTE = (
    "A line's label marks the best point of its group's mean curve; the verdicts above compare the mean of each "
    "run's own best epoch, a different number (for accuracy, at least as high)."
)
# (runs, keys) -> their raw histories (run_id, key, step, value, timestamp): the page reads through
# the history cache every session shares (`app.page.first_chart.CacheReader`).
Reader = Callable[[pd.DataFrame, list[str]], pd.DataFrame]


def needed_keys(metric: str) -> list[str]:
    """The history keys the curve chart of `metric` reads: its train and validation keys, and the
    validation accuracy that places each run's (and group's) best epoch."""
    return list(dict.fromkeys([metric, f"{frames.VAL_PREFIX}{metric}", contract.VAL_ACCURACY]))


@dataclass
class Figure:
    """One exportable chart: a file-safe name, a title, the chart and the exact points it plots."""

    name: str
    title: str
    chart: object
    data: pd.DataFrame


class Views:
    """The page's views of the selected runs; each is computed the first time it is asked for,
    so a page that shows one view never pays for the others.

    Histories come from `history` (every one, tidy: the report, the tests) or, with `reader`, are
    read when a view needs them, only its runs and keys: the summary, the verdicts and the forest
    plot need none for a finished run of this version (`frames.needs_history`); the curves read the
    runs drawn (`drawn`, bounded); Schedules, LR finder and the lowest val loss theirs when chosen."""

    def __init__(self, runs, history, options, *, all_runs, now_ms, stale_after_s, ui_base, reader: Reader | None = None):
        self.runs, self.history, self.options, self.all_runs = runs, history, options, all_runs
        self._reader = reader
        self.now_ms, self.stale_after_s, self.ui_base = now_ms, stale_after_s, ui_base
        self.metric = options.metric
        self.training = runs[~runs["kind"].isin(palette.NOT_TRAINING)]
        self.colors = palette.color_scale(all_runs, options.color)
        # The views that are about learning rates colour them so whatever the curves are coloured by.
        self.lr_colors = self.colors if options.color == contract.PARAM_LR else palette.color_scale(all_runs, contract.PARAM_LR)
        self._page_specs: dict[str, dict | None] = {}
        # Shared by sessions (and the warm-up): one builds a chart while the others wait for it.
        self._building = threading.RLock()
        self._comparisons: dict[tuple[str, float], stats.Comparison] = {}
        # Set by whoever loaded the history (the page): what the load read, and when and how long the build took.
        self.load_stats = None
        self.build_seconds = 0.0
        self.built_at = ""

    def history_of(self, runs: pd.DataFrame, keys) -> pd.DataFrame:
        """The tidy history of `runs`, `keys` only: from the history given, or read (see the class)."""
        keys = list(dict.fromkeys(keys))
        if self._reader is None:
            history = self.history
            return history[history["run_id"].isin(set(runs["run_id"])) & history["key"].isin(keys)]
        return frames.tidy_history(self._reader(runs, keys) if not runs.empty else pd.DataFrame(), runs)

    @cached_property
    def summary_history(self) -> pd.DataFrame:
        """What the summary reads: the runs without run-level metrics (running, older versions), a few keys."""
        lacking = self.training[frames.needs_history(self.training).to_numpy()] if not self.training.empty else self.training
        return self.history_of(lacking, frames.SUMMARY_HISTORY_KEYS)

    @cached_property
    def drawn(self) -> pd.DataFrame:
        """The training runs the curve chart draws: with repeats averaged, a bounded sample of the groups
        (`group_sample`); else every one, or with `options.top` the `top` runs of best validation
        accuracy. The table lists them all."""
        if self.options.group:
            return self.group_sample[0]
        top = self.options.top
        if not top or len(self.training) <= top:
            return self.training
        best = self.summary.set_index("run_id")["best_val_accuracy"]
        ranked = self.training.assign(_best=self.training["run_id"].map(best).astype(float))
        ranked = ranked.sort_values("_best", ascending=False, na_position="last", kind="stable").head(top)
        return self.training.loc[ranked.sort_index().index]

    @cached_property
    def group_sample(self) -> tuple[pd.DataFrame, dict]:
        """With repeats averaged: (the runs drawn, what was left out). Per chart column the
        `GROUPS_DRAWN` groups of best mean best-val-accuracy, each drawn from its first
        `GROUP_RUNS_DRAWN` runs by seed (then start time): the same runs on every page."""
        training = self.training
        if training.empty:
            return training, {"groups": 0, "groups_drawn": 0, "largest": 0, "largest_drawn": 0}
        best = self.summary.set_index("run_id")["best_val_accuracy"].astype(float)
        facet = frames.param_values(training, self.options.facet) if self.options.facet else pd.Series("", index=training.index)
        frame = training.assign(
            _key=stats.group_keys(training["params"], self.options.vary).to_numpy(), _facet=facet.to_numpy(),
            _seed=training["seed"].map(numbers.to_float), _start=training["start_time"].astype(float), _best=training["run_id"].map(best),
        )  # fmt: skip
        sizes = frame.groupby("_key").size()
        means = frame.groupby(["_facet", "_key"])["_best"].mean().rename("mean").reset_index()
        means = means.sort_values(["_facet", "mean", "_key"], ascending=[True, False, True], na_position="last", kind="stable")
        kept = set(means.groupby("_facet").head(GROUPS_DRAWN)["_key"])
        ordered = frame[frame["_key"].isin(kept)].sort_values(["_key", "_seed", "_start", "run_id"], na_position="last", kind="stable")
        chosen = ordered.groupby("_key", sort=False).head(GROUP_RUNS_DRAWN).index
        left_out = {
            "groups": int(sizes.size), "groups_drawn": len(kept), "largest": int(sizes.max()),
            "largest_drawn": int(min(sizes[list(kept)].max(), GROUP_RUNS_DRAWN)) if kept else 0,
        }  # fmt: skip
        return training.loc[training.index.isin(chosen)], left_out

    @property
    def hidden(self) -> int:
        """Training runs left out of the curve chart by `options.top` (not averaging repeats)."""
        return 0 if self.options.group else len(self.training) - len(self.drawn)

    def _with_predecessors(self, runs: pd.DataFrame) -> pd.DataFrame:
        """`runs` and the runs each continues from (`init_run_id`, followed back among `all_runs`)."""
        known = self.all_runs.drop_duplicates("run_id")
        parent = {r: p for r, p in zip(known["run_id"], known["init_run_id"], strict=True) if p}
        chained = {member for run_id in runs["run_id"] for member in frames.chain_of(run_id, parent)}
        return pd.concat([runs, known[known["run_id"].isin(chained - set(runs["run_id"]))]], ignore_index=True)

    @cached_property
    def curves(self) -> curve_data.Curves:
        drawn = self.drawn
        history = self.history_of(self._with_predecessors(drawn) if self.options.join else drawn, needed_keys(self.metric))
        return curve_data.curves(history, drawn, self.options, all_runs=self.all_runs)

    @cached_property
    def curves_chart(self):
        return self._curves_chart(0)

    def _curves_chart(self, max_points: int):
        o = self.options
        return charts.curves_chart(
            self.curves, metric=o.metric, colors=self.colors, facet_title=o.facet or "", smoothing=o.smoothing, log_y=o.log_y, max_points=max_points, chance=self.chance_line
        )  # fmt: skip

    @cached_property
    def chance(self) -> float | None:
        """1 / classes of the runs' data (their `num_classes` param), when they agree."""
        return frames.chance_level(self.training)

    @property
    def chance_line(self) -> float | None:
        """The chance level, on a chart of accuracy only."""
        return self.chance if self.options.metric == frames.split_metric(contract.ACCURACY)[0] else None

    @cached_property
    def at_chance(self) -> pd.DataFrame:
        """The finished runs whose best validation accuracy never left chance (they learned nothing)."""
        summary = self.summary
        if self.chance is None or summary.empty:
            return summary.iloc[0:0]
        stuck = summary["best_val_accuracy"].astype(float).map(lambda v: frames.at_chance(v, self.chance))
        return summary[stuck & (summary["state"] == "FINISHED")]

    @cached_property
    def summary(self) -> pd.DataFrame:
        return frames.summary(self.training, self.summary_history, now_ms=self.now_ms, stale_after_s=self.stale_after_s, ui_base=self.ui_base)

    @cached_property
    def sensitivity(self) -> pd.DataFrame:
        return frames.sensitivity(self.summary, self.training, self.options.vary)

    @cached_property
    def sensitivity_chart(self):
        """Bars: the 95% interval of the mean over repeats (`sensitivity_minmax_chart`: min–max)."""
        return charts.sensitivity_chart(self.sensitivity, band=frames.CI95, colors=self.lr_colors) if not self.sensitivity.empty else None

    @cached_property
    def sensitivity_minmax_chart(self):
        return charts.sensitivity_chart(self.sensitivity, band=frames.MINMAX, colors=self.lr_colors) if not self.sensitivity.empty else None

    def comparison(self, statistic: str = stats.BEST_VAL_ACCURACY.name, margin: float = stats.DEFAULT_MARGIN) -> stats.Comparison:
        """The groups of repeats ranked per stage and model on `statistic` (a key of `stats.STATISTICS`),
        each with its verdict against the best (`margin`: the equivalence margin); computed once per setting."""
        if (statistic, margin) not in self._comparisons:
            chosen = stats.STATISTICS[statistic]
            # Only the lowest validation loss reads histories (val_loss of every run), and only when chosen.
            losses = self.history_of(self.training, [contract.VAL_LOSS]) if chosen is stats.LOWEST_VAL_LOSS else self.summary_history.iloc[0:0]
            values = stats.values_of(self.training, self.summary, losses, chosen)
            self._comparisons[statistic, margin] = stats.compare(values, chosen, self.options.vary, margin=margin)
        return self._comparisons[statistic, margin]

    def forest_spec(self, statistic: str = stats.BEST_VAL_ACCURACY.name, margin: float = stats.DEFAULT_MARGIN) -> dict | None:
        """The comparison as a picture (`app.charts.forest`) in its page form; None when nothing was compared."""
        key = f"forest:{statistic}:{margin}"
        if key not in self._page_specs:
            comparison = self.comparison(statistic, margin)
            self._page_specs[key] = forest.forest_spec(comparison.table, colors=self.lr_colors, margin=margin, label=comparison.statistic.label,
                                                       bounds=comparison.statistic.bounds)  # fmt: skip
        return self._page_specs[key]

    @cached_property
    def schedule(self) -> curve_data.Curves:
        options = curve_data.CurveOptions(metric=LEARNING_RATE, facet=contract.PARAM_SCHEDULE, color=self.options.color, log_y=True)
        drawn = self.drawn  # the runs of the curve chart: a run's schedule is its configuration's
        return curve_data.curves(self.history_of(drawn, [contract.LEARNING_RATE]), drawn, options)

    @cached_property
    def schedule_chart(self):
        if self.schedule.points.empty:
            return None
        return charts.curves_chart(self.schedule, metric=LEARNING_RATE, colors=self.colors, facet_title="schedule", log_y=True, best_labels=False)

    @cached_property
    def lr_finder(self) -> pd.DataFrame:
        finders = self.runs[self.runs["kind"] == contract.KIND_LR_FIND]
        return frames.lr_finder(finders, self.history_of(finders, [histories.LR_FIND_LOSS, histories.LR_FIND_LR]))

    @cached_property
    def lr_finder_chart(self):
        return charts.lr_finder_chart(self.lr_finder) if not self.lr_finder.empty else None

    @cached_property
    def state_counts(self) -> tuple[int, int, int]:
        """(runs with no metrics yet, runs that logged no validation metric, runs shown as STALE)."""
        summary = self.summary
        if summary.empty:
            return 0, 0, 0
        per_epoch = set(contract.EPOCH_METRICS)  # from the run search: which keys each run logged
        validation = {key for key in per_epoch if frames.split_metric(key)[1] == frames.VALIDATION}
        keys = self.training["metric_keys"].map(set)
        without_val = int(keys.map(lambda k: bool(k & per_epoch) and not k & validation).sum())
        return int(summary["epochs"].isna().sum()), without_val, int((summary["state"] == "STALE").sum())

    @property
    def ended_without_metrics(self) -> int:
        """Runs no longer running that never logged a metric (a failed start, an offline attempt)."""
        summary = self.summary
        return 0 if summary.empty else int((summary["epochs"].isna() & ~summary["state"].isin(["RUNNING", "STALE", "SCHEDULED"])).sum())

    @cached_property
    def thinned(self) -> bool:
        """Whether the page draws some curve of the chosen metric thinned (see `charts.thin`)."""
        points = self.curves.points
        if points.empty or points["epoch"].max() - points["epoch"].min() < charts.PAGE_MAX_POINTS:
            return False  # one point per line, split and epoch: no curve can be longer
        return bool((points.groupby(["line", "split"]).size() > charts.PAGE_MAX_POINTS).any())

    def page_spec(self, name: str) -> dict | None:
        """The chart `name` (curves, sensitivity, sensitivity_minmax, schedule, lr_finder) as the page sends it
        (`app.charts.spec.page_spec`: data inline, long curves thinned); None when there is nothing to draw."""
        with self._building:
            if name not in self._page_specs:
                if name == "curves" and self.curves.points.empty:
                    chart = None
                elif name == "curves" and self.thinned:
                    chart = self._curves_chart(charts.PAGE_MAX_POINTS)
                else:
                    chart = getattr(self, f"{name}_chart")
                self._page_specs[name] = spec.page_spec(chart) if chart is not None else None
            return self._page_specs[name]

    def prepare(self) -> Views:
        """Compute the answer (summary, notes, the forest plot) now, from the run search: done once
        before the object is shared by sessions. The curve chart follows (`page_spec("curves")`)."""
        _ = self.summary, self.state_counts, self.forest_spec()
        return self

    @property
    def notes(self) -> list[str]:
        missing = self.curves.missing_predecessors
        return [f"{len(missing)} run(s) continue from a run that was deleted (or cannot be read); they are drawn on their own."] if missing else []

    def figures(self) -> list[Figure]:
        found = [Figure(f"curves-{self.metric}", f"{self.metric} per epoch", self.curves_chart, self.curves.points)]
        if self.sensitivity_chart is not None:
            found.append(Figure("lr-sensitivity", "Learning-rate sensitivity", self.sensitivity_chart, self.sensitivity))
        if self.schedule_chart is not None:
            found.append(Figure("schedules", "Learning rate used per epoch", self.schedule_chart, self.schedule.points))
        if self.lr_finder_chart is not None:
            found.append(Figure("lr-finder", "Learning-rate finder", self.lr_finder_chart, self.lr_finder))
        return found


def build(
    runs: pd.DataFrame,
    history: pd.DataFrame | None,
    options: curve_data.CurveOptions,
    *,
    all_runs: pd.DataFrame | None = None,
    now_ms: float,
    stale_after_s: float,
    ui_base: str,
    reader: Reader | None = None,
) -> Views:
    """The views of `runs` (already filtered); `all_runs` gives colours and the runs continued from;
    `history` every history of them, or None with `reader` (see `Views`)."""
    all_runs = runs if all_runs is None else all_runs
    return Views(runs, history, options, all_runs=all_runs, now_ms=now_ms, stale_after_s=stale_after_s, ui_base=ui_base, reader=reader)
