"""Everything the page shows, computed without Streamlit: the frames and their charts.

The page lays these out; the report command and the tests build the very same objects, so
a report shows what the page shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from app.analysis import curve_data, frames, stats
from app.charts import builders as charts
from app.charts import forest, spec
from train import contract

LEARNING_RATE = frames.split_metric(contract.LEARNING_RATE)[0]


@dataclass
class Figure:
    """One exportable chart: a file-safe name, a title, the chart and the exact points it plots."""

    name: str
    title: str
    chart: object
    data: pd.DataFrame


class Views:
    """The page's views of the selected runs; each is computed the first time it is asked for,
    so a page that shows one view never pays for the others."""

    def __init__(self, runs, history, options, *, all_runs, now_ms, stale_after_s, ui_base):
        self.runs, self.history, self.options, self.all_runs = runs, history, options, all_runs
        self.now_ms, self.stale_after_s, self.ui_base = now_ms, stale_after_s, ui_base
        self.metric = options.metric
        self.training = runs[~runs["kind"].isin(charts.NOT_TRAINING)]
        self.colors = charts.color_scale(all_runs, options.color)
        # The views that are about learning rates colour them so whatever the curves are coloured by.
        self.lr_colors = self.colors if options.color == contract.PARAM_LR else charts.color_scale(all_runs, contract.PARAM_LR)
        self._page_specs: dict[str, dict | None] = {}
        self._comparisons: dict[tuple[str, float], stats.Comparison] = {}
        # Set by whoever loaded the history (the page): what the load read, and when and how long the build took.
        self.load_stats = None
        self.build_seconds = 0.0
        self.built_at = ""

    @cached_property
    def drawn(self) -> pd.DataFrame:
        """The training runs the curve chart draws: every one, or (with `options.top`, when repeats
        are not averaged) the `top` runs of best validation accuracy. The table lists them all."""
        top = self.options.top
        if not top or self.options.group or len(self.training) <= top:
            return self.training
        best = self.summary.set_index("run_id")["best_val_accuracy"]
        ranked = self.training.assign(_best=self.training["run_id"].map(best).astype(float))
        ranked = ranked.sort_values("_best", ascending=False, na_position="last", kind="stable").head(top)
        return self.training.loc[ranked.sort_index().index]

    @property
    def hidden(self) -> int:
        """Training runs left out of the curve chart by `options.top`."""
        return len(self.training) - len(self.drawn)

    @cached_property
    def curves(self) -> curve_data.Curves:
        return curve_data.curves(self.history, self.drawn, self.options, all_runs=self.all_runs)

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
        return frames.summary(self.training, self.history, now_ms=self.now_ms, stale_after_s=self.stale_after_s, ui_base=self.ui_base)

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
            values = stats.values_of(self.training, self.summary, self.history, chosen)
            self._comparisons[statistic, margin] = stats.compare(values, chosen, self.options.vary, margin=margin)
        return self._comparisons[statistic, margin]

    def forest_spec(self, statistic: str = stats.BEST_VAL_ACCURACY.name, margin: float = stats.DEFAULT_MARGIN) -> dict | None:
        """The comparison as a picture (`app.charts.forest`) in its page form; None when nothing was compared."""
        key = f"forest:{statistic}:{margin}"
        if key not in self._page_specs:
            comparison = self.comparison(statistic, margin)
            bounds = (0.0, 1.0) if "accuracy" in comparison.statistic.name else None  # an accuracy lies in [0, 1]
            chart = forest.forest_chart(comparison.table, colors=self.lr_colors, margin=margin, label=comparison.statistic.label, bounds=bounds)
            self._page_specs[key] = spec.page_spec(chart) if chart is not None else None
        return self._page_specs[key]

    @cached_property
    def schedule(self) -> curve_data.Curves:
        options = curve_data.CurveOptions(metric=LEARNING_RATE, facet=contract.PARAM_SCHEDULE, color=self.options.color, log_y=True)
        return curve_data.curves(self.history, self.training, options)

    @cached_property
    def schedule_chart(self):
        if self.schedule.points.empty:
            return None
        return charts.curves_chart(self.schedule, metric=LEARNING_RATE, colors=self.colors, facet_title="schedule", log_y=True, best_labels=False)

    @cached_property
    def lr_finder(self) -> pd.DataFrame:
        return frames.lr_finder(self.runs[self.runs["kind"] == contract.KIND_LR_FIND], self.history)

    @cached_property
    def lr_finder_chart(self):
        return charts.lr_finder_chart(self.lr_finder) if not self.lr_finder.empty else None

    @cached_property
    def state_counts(self) -> tuple[int, int, int]:
        """(runs with no metrics yet, runs that logged no validation metric, runs shown as STALE)."""
        summary = self.summary
        if summary.empty:
            return 0, 0, 0
        logged = set(self.history["run_id"])
        with_val = set(self.history.loc[self.history["split"] == frames.VALIDATION, "run_id"])
        without_val = sum(1 for run_id in summary["run_id"] if run_id in logged and run_id not in with_val)
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
        if name not in self._page_specs:
            if name == "curves" and self.thinned:
                chart = self._curves_chart(charts.PAGE_MAX_POINTS)
            else:
                chart = getattr(self, f"{name}_chart")
            self._page_specs[name] = spec.page_spec(chart) if chart is not None else None
        return self._page_specs[name]

    def prepare(self) -> Views:
        """Compute what the page's first view shows (curve chart, runs table, notes) now: done once
        before the object is shared by sessions, so none of them waits on another's work."""
        _ = self.page_spec("curves"), self.summary, self.state_counts, self.notes, self.forest_spec()
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
    history: pd.DataFrame,
    options: curve_data.CurveOptions,
    *,
    all_runs: pd.DataFrame | None = None,
    now_ms: float,
    stale_after_s: float,
    ui_base: str,
) -> Views:
    """The views of `runs` (already filtered); `all_runs` gives colours and the runs continued from."""
    all_runs = runs if all_runs is None else all_runs
    return Views(runs, history, options, all_runs=all_runs, now_ms=now_ms, stale_after_s=stale_after_s, ui_base=ui_base)
