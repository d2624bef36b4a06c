"""The comparison as a picture: per stage a forest plot of its groups of repeats.

Each row is one group (one configuration): a dot at its mean, a line over its 95% interval,
n and the verdict written beside it, the stage's best as a diamond, and a grey band of
±margin around the best (a group whose difference lies inside it is `equivalent`). The dots
and lines take the learning rate's colour, as on every other chart of the page; the verdict
is the word beside them. One panel per stage (and model), side by side, so the whole answer
fits the first screen; the panels wrap after `PANELS_PER_ROW`.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from app.analysis import stats
from app.charts import builders
from app.charts import colors as palette

PANELS_PER_ROW = 4
ROWS_PER_PANEL = 8  # the best groups of a stage; the Groups view lists every one
ROW_HEIGHT = 19
LABEL_WIDTH = 150  # the group names left of each panel (longer ones are cut, the tooltip has them whole)
BADGE_SHARE = 0.42  # the share of a panel's width right of its x scale, where "n=3 worse" is written
MAX_PANEL_WIDTH = 420
BADGES = {
    stats.BEST: "best",
    "equivalent": "≈ best",
    stats.WORSE: "worse",
    stats.WITHIN_NOISE: "undecided",
    stats.CANNOT_TELL: "one run",
}
COLUMNS = ["panel", "group", "lr_label", "n", "mean", "ci_low", "ci_high", "verdict", "difference", "badge", "row"]


def forest_frame(table: pd.DataFrame, rows_per_panel: int = ROWS_PER_PANEL) -> tuple[pd.DataFrame, int]:
    """The rows the forest plot draws (`COLUMNS`), the best of each stage first, at most
    `rows_per_panel` per panel; and how many groups were left out for room."""
    if table.empty:
        return pd.DataFrame(columns=COLUMNS), 0
    several_models = table["model"].nunique() > 1
    frame = table.assign(
        panel=(table["stage"].replace("", "(no stage)") + (" · " + table["model"] if several_models else "")),
        lr_label=table["lr"].map(lambda v: stats.lr_text(v) if pd.notna(v) else ""),
    )
    frame = frame.assign(row=frame.groupby("panel", sort=False).cumcount())
    shown = frame[frame["row"] < rows_per_panel]
    badge = shown["verdict"].map(BADGES).fillna(shown["verdict"])
    shown = shown.assign(badge=("n=" + shown["n"].astype(int).astype(str) + "  " + badge))
    return shown[COLUMNS].reset_index(drop=True), len(frame) - len(shown)


def forest_spec(table: pd.DataFrame, *, colors: palette.ColorScale, margin: float, label: str, width: int = builders.FULL_WIDTH, bounds: tuple[float, float] | None = None) -> dict | None:
    """The forest plot of a comparison's table (`stats.Comparison.table`) as the Vega-Lite dict the
    page sends (`app.charts.spec.page_spec`'s form: each view's data inline, typed); None when it is empty.

    Written as the dict itself, not through Altair: Altair validated each layer's encodings against
    the schema and deep-copied every layer at each composition, 0.6-0.9 s for four panels on the
    first visitor's path (the warm-up computes the answer before the page can draw it); this takes
    milliseconds. The spec is the one Altair wrote for the same chart (tests/test_forest_spec.py
    compares them), so the picture is the same."""
    frame, _ = forest_frame(table)
    if frame.empty:
        return None
    panels = list(dict.fromkeys(frame["panel"]))
    per_row = min(len(panels), PANELS_PER_ROW)
    plot_width = int(min(MAX_PANEL_WIDTH, width / per_row - LABEL_WIDTH - 16))
    rows = int(frame.groupby("panel").size().max())
    height = rows * ROW_HEIGHT + 8
    scale = {"domain": colors.domain, "range": colors.range}
    views = [_panel(frame[frame["panel"] == panel], scale, margin, label, plot_width, height, bounds) for panel in panels]
    return {
        "$schema": alt.SCHEMA_URL,
        "config": {"view": {"continuousWidth": 300, "continuousHeight": 300, "stroke": None}, "axis": {"labelFontSize": 11, "titleFontSize": 11}},
        "concat": views, "columns": per_row, "spacing": 16,
    }  # fmt: skip


def x_domain(part: pd.DataFrame, margin: float, bounds: tuple[float, float] | None = None) -> list[float]:
    """A panel's x range: every interval and the margin band, with a little room either side, within
    `bounds` (those an accuracy can take: two seeds' interval can reach past 1, an axis reading 1.05
    would too). The badges have their own column right of the plot, never over a line."""
    best = part.iloc[0]["mean"]
    values = np.concatenate([part["mean"].to_numpy(float), part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float), [best - margin, best + margin]])
    values = values[np.isfinite(values)]
    if bounds is not None:
        values = np.clip(values, *bounds)
    low, high = float(values.min()), float(values.max())
    span = high - low or max(abs(high) * 0.05, 0.01)
    low, high = low - span * 0.04, high + span * 0.04
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return [low, high]


def _panel(part: pd.DataFrame, color_scale: dict, margin: float, label: str, width: int, height: int, bounds) -> dict:
    best = part.iloc[0]
    domain = x_domain(part, margin, bounds)
    if bounds is not None:  # an interval past what the statistic can take is drawn to its edge
        part = part.assign(ci_low=part["ci_low"].clip(*bounds), ci_high=part["ci_high"].clip(*bounds))
    rows = {"values": records(part), "format": {"parse": None}}  # one list, shared by the views that draw the rows
    badge_x = round(width * (1 - BADGE_SHARE))  # the x scale ends here: the badges never sit on a line or the band
    scale = {"domain": domain, "range": [0, badge_x], "nice": False, "zero": False}
    y = {"field": "group", "type": "nominal", "sort": list(part["group"]), "title": None, "axis": {"labelLimit": LABEL_WIDTH, "labelFontSize": 11, "ticks": False, "domain": False}}
    color = {"field": "lr_label", "type": "nominal", "scale": color_scale, "legend": None}
    tooltip = [
        {"field": "group", "type": "nominal", "title": "group"}, {"field": "n", "type": "quantitative", "title": "runs"},
        {"field": "mean", "type": "quantitative", "format": ".4f"},
        {"field": "ci_low", "type": "quantitative", "title": "95% CI low", "format": ".4f"},
        {"field": "ci_high", "type": "quantitative", "title": "95% CI high", "format": ".4f"},
        {"field": "verdict", "type": "nominal"}, {"field": "difference", "type": "quantitative", "title": "short of the best", "format": ".4f"},
    ]  # fmt: skip
    is_best = {"field": "verdict", "equal": stats.BEST}
    best_mean = float(best["mean"])
    band = {"low": float(max(best_mean - margin, domain[0])), "high": float(min(best_mean + margin, domain[1]))}
    layers = [
        {"data": {"values": [band], "format": {"parse": None}}, "mark": {"type": "rect", "color": "#d9d9d9", "opacity": 0.55},
         "encoding": {"x": {"field": "low", "type": "quantitative", "scale": scale}, "x2": {"field": "high"}}},
        {"data": {"values": [{"mean": best_mean}], "format": {"parse": None}}, "mark": {"type": "rule", "color": "#555", "strokeDash": [3, 3], "strokeWidth": 1},
         "encoding": {"x": {"field": "mean", "type": "quantitative"}}},
        {"data": rows, "mark": {"type": "rule", "strokeWidth": 2.6},
         "encoding": {"x": {"field": "ci_low", "type": "quantitative", "scale": {**scale, "clamp": True}}, "x2": {"field": "ci_high"}, "y": y, "color": color, "tooltip": tooltip}},
        {"data": rows, "mark": {"type": "point", "filled": True, "size": 70, "opacity": 1},
         "encoding": {
             "x": {"field": "mean", "type": "quantitative", "scale": scale, "title": label, "axis": {"tickCount": 4, "format": ".3~f"}}, "y": y,
             "color": color, "tooltip": tooltip,
             "shape": {"condition": {"test": is_best, "value": "diamond"}, "value": "circle"},
             "size": {"condition": {"test": is_best, "value": 150}, "value": 60},
             "stroke": {"condition": {"test": is_best, "value": "#111"}, "value": "white"},
         }},
        *(
            {"data": rows, "mark": {"type": "text", "align": "left", "dx": 8, "fontSize": 11, "fontWeight": weight},
             "encoding": {"x": {"value": badge_x}, "y": y, "text": {"field": "badge", "type": "nominal"},
                          "color": {"condition": {"test": {"field": "verdict", "equal": stats.WORSE}, "value": "#8a8a8a"}, "value": "#222"}},
             "transform": [{"filter": predicate}]}
            for weight, predicate in (("bold", is_best), ("normal", {"not": is_best}))
        ),
    ]  # fmt: skip
    return {"layer": layers, "width": width, "height": height, "title": {"text": str(best["panel"]), "anchor": "start", "fontSize": 13}}


def records(frame: pd.DataFrame) -> list[dict]:
    """`frame`'s rows as JSON-ready dicts, as Altair writes a DataFrame's (Python numbers; a missing or
    infinite number is None)."""
    columns = {}
    for name, column in frame.items():
        if pd.api.types.is_bool_dtype(column):
            columns[name] = [bool(v) for v in column]
        elif pd.api.types.is_integer_dtype(column):
            columns[name] = [int(v) for v in column]
        elif pd.api.types.is_float_dtype(column):
            columns[name] = [float(v) if np.isfinite(v) else None for v in column]
        else:
            columns[name] = [None if value is None or (isinstance(value, float) and np.isnan(value)) else value for value in column.astype(object)]
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
