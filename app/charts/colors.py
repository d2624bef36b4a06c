"""The page's colours: the learning rate has one colour everywhere, from an ordered palette, cool
for small rates and warm for large ones, over every rate of the experiment (not only the filtered
runs), so a filter never repaints a curve; another param colouring the curves takes a categorical
palette.
"""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd

from app.analysis import frames
from train import contract

# Ordered, cool to warm, each distinct from its neighbours on white; sampled evenly for n rates.
LR_ANCHORS = ["#3b0f70", "#4a3aa8", "#1f6fd1", "#0a9fb0", "#1f9e4a", "#c9a100", "#f07f13", "#d9412b", "#b5123c", "#6b0f2a"]
CATEGORY_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
NOT_TRAINING = (contract.KIND_LR_FIND, contract.KIND_EVALUATE, contract.KIND_SWEEP)  # no training curves, or an lr that is no training rate


@dataclass
class ColorScale:
    """One colour per value, fixed by the whole experiment: the legend's domain, range and title."""

    domain: list[str]
    range: list[str]
    title: str

    def encoding(self, field: str = "color") -> alt.Color:
        return alt.Color(
            f"{field}:N",
            scale=alt.Scale(domain=self.domain, range=self.range),  # the legend follows the domain's order
            title=self.title,
            legend=alt.Legend(orient="top", direction="horizontal", columns=min(max(len(self.domain), 1), 8), symbolStrokeWidth=3, symbolSize=180, symbolOpacity=1, labelLimit=220),
        )


def ordered_colors(n: int) -> list[str]:
    """n colours from the ordered palette: anchors themselves up to 10, interpolated beyond. Up
    to 8 skip the two darkest ends: side by side, deep violet and deep maroon read as one colour."""
    if n <= 0:
        return []
    if n <= len(LR_ANCHORS):
        ends = (1, len(LR_ANCHORS) - 2) if n <= len(LR_ANCHORS) - 2 else (0, len(LR_ANCHORS) - 1)
        return [LR_ANCHORS[round(i)] for i in np.linspace(*ends, n)] if n > 1 else [LR_ANCHORS[2]]
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in LR_ANCHORS], dtype=float)
    positions = np.linspace(0, len(LR_ANCHORS) - 1, n)
    channels = [np.interp(positions, np.arange(len(LR_ANCHORS)), rgb[:, k]) for k in range(3)]
    return ["#{:02x}{:02x}{:02x}".format(*(int(round(ch[i])) for ch in channels)) for i in range(n)]


def color_scale(runs: pd.DataFrame, by: str = contract.PARAM_LR) -> ColorScale:
    """The colour of each learning rate (or of each value of param `by`) over `runs`."""
    runs = runs[~runs["kind"].isin(NOT_TRAINING)]
    if by == contract.PARAM_LR:
        rates = runs.dropna(subset=["lr"]).drop_duplicates("lr_label").sort_values("lr")
        domain = [label for label in rates["lr_label"] if label]
        logged = runs["metric_keys"].map(bool) if "metric_keys" in runs else pd.Series(True, index=runs.index)
        if ((runs["lr_label"] == "") & logged).any():  # a run without a rate that drew a curve (a failed start draws none)
            domain.append("")
        return ColorScale(domain, ordered_colors(len(domain)), "learning rate")
    values = frames.param_values(runs, by)
    domain = sorted(values.unique(), key=natural_order)
    palette = CATEGORY_COLORS if len(domain) <= len(CATEGORY_COLORS) else ordered_colors(len(domain))
    return ColorScale(domain, [palette[i % len(palette)] for i in range(len(domain))], by)


def natural_order(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)
