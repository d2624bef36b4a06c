"""Everything the page shows, computed without Streamlit: the frames and their charts.

The page lays these out; the report command and the tests build the very same objects, so
a report shows what the page shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from app import charts, frames
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

    @cached_property
    def curves(self) -> frames.Curves:
        return frames.curves(self.history, self.training, self.options, all_runs=self.all_runs)

    @cached_property
    def curves_chart(self):
        o = self.options
        return charts.curves_chart(self.curves, metric=o.metric, colors=self.colors, facet_title=o.facet or "", smoothing=o.smoothing, log_y=o.log_y)

    @cached_property
    def summary(self) -> pd.DataFrame:
        return frames.summary(self.training, self.history, now_ms=self.now_ms, stale_after_s=self.stale_after_s, ui_base=self.ui_base)

    @cached_property
    def sensitivity(self) -> pd.DataFrame:
        return frames.sensitivity(self.summary, self.options.band)

    @cached_property
    def sensitivity_chart(self):
        return charts.sensitivity_chart(self.sensitivity, band=self.options.band) if not self.sensitivity.empty else None

    @cached_property
    def schedule(self) -> frames.Curves:
        options = frames.CurveOptions(metric=LEARNING_RATE, facet=contract.PARAM_SCHEDULE, color=self.options.color, log_y=True)
        return frames.curves(self.history, self.training, options)

    @cached_property
    def schedule_chart(self):
        if self.schedule.points.empty:
            return None
        return charts.curves_chart(self.schedule, metric=LEARNING_RATE, colors=self.colors, facet_title="schedule", log_y=True)

    @cached_property
    def lr_finder(self) -> pd.DataFrame:
        return frames.lr_finder(self.runs[self.runs["kind"] == contract.KIND_LR_FIND], self.history)

    @cached_property
    def lr_finder_chart(self):
        return charts.lr_finder_chart(self.lr_finder) if not self.lr_finder.empty else None

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
    options: frames.CurveOptions,
    *,
    all_runs: pd.DataFrame | None = None,
    now_ms: float,
    stale_after_s: float,
    ui_base: str,
) -> Views:
    """The views of `runs` (already filtered); `all_runs` gives colours and the runs continued from."""
    all_runs = runs if all_runs is None else all_runs
    return Views(runs, history, options, all_runs=all_runs, now_ms=now_ms, stale_after_s=stale_after_s, ui_base=ui_base)
