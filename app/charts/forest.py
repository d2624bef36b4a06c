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

PANELS_PER_ROW = 4
ROWS_PER_PANEL = 8  # the best groups of a stage; the Groups view lists every one
ROW_HEIGHT = 19
LABEL_WIDTH = 150  # the group names left of each panel (longer ones are cut, the tooltip has them whole)
BADGE_ROOM = 0.42  # the share of a panel's x range right of the intervals, for "n=3 worse"
MAX_PANEL_WIDTH = 420
BADGES = {
    stats.BEST: "best",
    "equivalent": "≈ best",
    stats.WORSE: "worse",
    stats.WITHIN_NOISE: "undecided",
    stats.CANNOT_TELL: "one run",
}
COLUMNS = ["panel", "group", "lr_label", "n", "mean", "ci_low", "ci_high", "verdict", "difference", "badge", "right", "row"]


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
    shown = shown.assign(badge=("n=" + shown["n"].astype(int).astype(str) + "  " + badge), right=shown["ci_high"].where(np.isfinite(shown["ci_high"].astype(float)), shown["mean"]))
    return shown[COLUMNS].reset_index(drop=True), len(frame) - len(shown)


def forest_chart(table: pd.DataFrame, *, colors: builders.ColorScale, margin: float, label: str, width: int = builders.FULL_WIDTH, bounds: tuple[float, float] | None = None):
    """The forest plot of a comparison's table (`stats.Comparison.table`); None when it is empty."""
    frame, _ = forest_frame(table)
    if frame.empty:
        return None
    panels = list(dict.fromkeys(frame["panel"]))
    per_row = min(len(panels), PANELS_PER_ROW)
    plot_width = int(min(MAX_PANEL_WIDTH, width / per_row - LABEL_WIDTH - 16))
    rows = int(frame.groupby("panel").size().max())
    height = rows * ROW_HEIGHT + 8
    charts = [_panel(frame[frame["panel"] == panel], colors, margin, label, plot_width, height, bounds) for panel in panels]
    return alt.concat(*charts, columns=per_row, spacing=16).configure_view(stroke=None).configure_axis(labelFontSize=11, titleFontSize=11)


def x_domain(part: pd.DataFrame, margin: float, bounds: tuple[float, float] | None = None) -> list[float]:
    """A panel's x range: every interval and the margin band (within `bounds`, those an accuracy
    can take: two seeds' interval can reach past 1), then room on the right for the badges."""
    best = part.iloc[0]["mean"]
    values = np.concatenate([part["mean"].to_numpy(float), part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float), [best - margin, best + margin]])
    values = values[np.isfinite(values)]
    if bounds is not None:
        values = np.clip(values, *bounds)
    low, high = float(values.min()), float(values.max())
    span = high - low or max(abs(high) * 0.05, 0.01)
    low -= span * 0.04
    return [low, high + span * BADGE_ROOM / (1 - BADGE_ROOM)]


def _panel(part: pd.DataFrame, colors: builders.ColorScale, margin: float, label: str, width: int, height: int, bounds):
    best = part.iloc[0]
    domain = x_domain(part, margin, bounds)
    if bounds is not None:  # an interval past what the statistic can take is drawn to its edge
        part = part.assign(ci_low=part["ci_low"].clip(*bounds), ci_high=part["ci_high"].clip(*bounds), right=part["right"].clip(*bounds))
    order = list(part["group"])
    x = alt.X("mean:Q", scale=alt.Scale(domain=domain, nice=False, zero=False), title=label, axis=alt.Axis(tickCount=4, format=".3~f"))
    y = alt.Y("group:N", sort=order, title=None, axis=alt.Axis(labelLimit=LABEL_WIDTH, labelFontSize=11, ticks=False, domain=False))
    color = alt.Color("lr_label:N", scale=alt.Scale(domain=colors.domain, range=colors.range), legend=None)
    tooltip = [
        alt.Tooltip("group:N", title="group"), alt.Tooltip("n:Q", title="runs"), alt.Tooltip("mean:Q", format=".4f"),
        alt.Tooltip("ci_low:Q", title="95% CI low", format=".4f"), alt.Tooltip("ci_high:Q", title="95% CI high", format=".4f"),
        alt.Tooltip("verdict:N"), alt.Tooltip("difference:Q", title="short of the best", format=".4f"),
    ]  # fmt: skip
    base = alt.Chart(part).encode(y=y)
    is_best = alt.FieldEqualPredicate(field="verdict", equal=stats.BEST)
    band = pd.DataFrame({"low": [max(best["mean"] - margin, domain[0])], "high": [min(best["mean"] + margin, domain[1])]})
    layers = [
        alt.Chart(band).mark_rect(color="#d9d9d9", opacity=0.55).encode(x=alt.X("low:Q", scale=alt.Scale(domain=domain, nice=False, zero=False)), x2="high:Q"),
        alt.Chart(pd.DataFrame({"mean": [best["mean"]]})).mark_rule(color="#555", strokeDash=[3, 3], strokeWidth=1).encode(x="mean:Q"),
        base.mark_rule(strokeWidth=2.6).encode(x=alt.X("ci_low:Q", scale=alt.Scale(domain=domain, nice=False, zero=False, clamp=True)), x2="ci_high:Q", color=color, tooltip=tooltip),
        base.mark_point(filled=True, size=70, opacity=1).encode(
            x=x, color=color, tooltip=tooltip,
            shape=alt.condition(alt.FieldEqualPredicate(field="verdict", equal=stats.BEST), alt.value("diamond"), alt.value("circle")),
            size=alt.condition(alt.FieldEqualPredicate(field="verdict", equal=stats.BEST), alt.value(150), alt.value(60)),
            stroke=alt.condition(alt.FieldEqualPredicate(field="verdict", equal=stats.BEST), alt.value("#111"), alt.value("white")),
        ),  # fmt: skip
        *(
            base.mark_text(align="left", dx=10, fontSize=11, fontWeight=weight)
            .encode(x=alt.X("right:Q", scale=alt.Scale(domain=domain, nice=False, zero=False)), text="badge:N",
                    color=alt.condition(alt.FieldEqualPredicate(field="verdict", equal=stats.WORSE), alt.value("#8a8a8a"), alt.value("#222")))
            .transform_filter(predicate)
            for weight, predicate in (("bold", is_best), ("normal", {"not": is_best}))
        ),  # fmt: skip
    ]
    return alt.layer(*layers).properties(width=width, height=height, title=alt.TitleParams(str(best["panel"]), anchor="start", fontSize=13))
