"""Altair chart builders: pure functions from the frames in `app.frames` to charts.

One chart per question. The learning rate has one colour everywhere: an ordered palette,
cool for small rates and warm for large ones, over every rate of the experiment (not only
the filtered runs), so a filter never repaints a curve. Run names, params and tags only
ever travel as data values, never as field names or expressions, so nothing a user typed
into a run name is evaluated by Vega.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd

from app import frames
from train import contract

# Curves carry up to a few hundred thousand points by design; Altair's 5,000-row guard would refuse them.
alt.data_transformers.disable_max_rows()

# Ordered, cool to warm, each distinct from its neighbours on white; sampled evenly for n rates.
LR_ANCHORS = ["#3b0f70", "#4a3aa8", "#1f6fd1", "#0a9fb0", "#1f9e4a", "#c9a100", "#f07f13", "#d9412b", "#b5123c", "#6b0f2a"]
CATEGORY_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
STAGE_COLORS = dict(zip(contract.STAGES, ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c"], strict=True))
SPLIT_DASH = alt.Scale(domain=[frames.TRAIN, frames.VALIDATION], range=[[5, 3], [1, 0]])
SPLIT_LEGEND = alt.Legend(orient="top", direction="horizontal", symbolOpacity=1, symbolStrokeWidth=2, symbolStrokeColor="#333", symbolSize=300)
LR_AXIS = alt.Axis(format="~e", values=[10.0**k for k in range(-12, 3)])
NOT_TRAINING = (contract.KIND_LR_FIND, contract.KIND_EVALUATE, contract.KIND_SWEEP)  # no training curves, or an lr that is no training rate
HEIGHT = 320
FULL_WIDTH = 1000
# Points per line and split the page draws; longer curves are thinned for the browser (exports keep all).
PAGE_MAX_POINTS = 500


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
        if (runs["lr_label"] == "").any():
            domain.append("")
        return ColorScale(domain, ordered_colors(len(domain)), "learning rate")
    values = frames.param_values(runs, by)
    domain = sorted(values.unique(), key=_natural)
    palette = CATEGORY_COLORS if len(domain) <= len(CATEGORY_COLORS) else ordered_colors(len(domain))
    return ColorScale(domain, [palette[i % len(palette)] for i in range(len(domain))], by)


def _natural(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _stage_scale(values) -> alt.Scale:
    present = list(dict.fromkeys(values))
    ordered = [s for s in contract.STAGES if s in present] + sorted(s for s in present if s not in contract.STAGES)
    extra = iter(CATEGORY_COLORS[4:] + CATEGORY_COLORS)
    return alt.Scale(domain=ordered, range=[STAGE_COLORS.get(s) or next(extra) for s in ordered])


def facet_order(values) -> list[str]:
    """Stages in training order, then anything else (joined chains, other params) sorted."""
    present = list(dict.fromkeys(values))
    rank = {stage: i for i, stage in enumerate(contract.STAGES)}
    return sorted(present, key=lambda v: (0, rank[v], "") if v in rank else (1, 0, v))


LOOKUP_FIELDS = ["color", "facet", "label", "lr_label", "stage", "schedule", "n_runs"]


def _value_tooltips(metric: str, smoothed: bool, grouped: bool) -> list[alt.Tooltip]:
    return [
        alt.Tooltip("label:N", title="group" if grouped else "run"),
        alt.Tooltip("lr_label:N", title="lr"),
        alt.Tooltip("stage:N", title="stage"),
        alt.Tooltip("schedule:N", title="schedule"),
        alt.Tooltip("split:N", title="split"),
        alt.Tooltip("epoch:Q", title="epoch"),
        alt.Tooltip("value:Q", title=f"mean {metric}" if grouped else metric, format=".4~g"),
        *([alt.Tooltip("smoothed:Q", title="smoothed", format=".4~g")] if smoothed else []),
        *([alt.Tooltip("n_runs:Q", title="runs")] if grouped else []),
    ]


def thin(points: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """At most about `max_points` points per line and split, for drawing: a curve longer than that
    keeps, per bucket of consecutive epochs, its lowest and highest value (spikes stay visible), and
    its first, last and best points. Shorter curves are untouched."""
    if points.empty or max_points <= 0:
        return points
    groups = points.groupby(["line", "split"], sort=False)["epoch"]
    size = groups.transform("size")
    if (size <= max_points).all():
        return points
    ordered = points.sort_values(["line", "split", "epoch"], kind="stable")
    size = size.reindex(ordered.index)
    rank = ordered.groupby(["line", "split"], sort=False).cumcount()
    buckets = max(1, max_points // 2)
    bucket = (rank * buckets // size).where(size > max_points, rank)
    by_value = ordered.assign(_bucket=bucket).sort_values("value", kind="stable", na_position="first")
    keys = ["line", "split", "_bucket"]
    keep = set(by_value.groupby(keys, sort=False).head(1).index) | set(by_value.groupby(keys, sort=False).tail(1).index)
    keep |= set(ordered.index[(rank == 0) | (rank == size - 1) | ordered["best"].fillna(False).astype(bool)])
    return points.loc[sorted(keep)]


def compact(curves: frames.Curves, smoothing: float, max_points: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The points as the browser gets them: per point only what varies (line number, split, epoch,
    values), per line the rest (colour, facet, names), joined back by a Vega lookup. A fifth of
    the bytes, and Vega builds that many fewer objects. `max_points` > 0 thins long curves (`thin`)."""
    points = thin(curves.points, max_points)
    codes, lines = pd.factorize(points["line"])
    per_line = points.assign(line=codes).drop_duplicates("line")[["line", *LOOKUP_FIELDS]]
    keep = ["split", "epoch", "value", "best", "role"]
    if smoothing > 0:
        keep.append("smoothed")
    if (points["role"] == "mean").any():
        keep += ["low", "high"]
    data = points[keep].assign(line=codes)
    if not curves.boundaries.empty:
        facets = curves.boundaries["facet"].drop_duplicates().tolist()
        numbers = dict(zip(facets, range(len(lines), len(lines) + len(facets)), strict=True))
        rules = curves.boundaries.assign(line=curves.boundaries["facet"].map(numbers), role="boundary")[["line", "epoch", "role"]]
        data = pd.concat([data, rules], ignore_index=True)
        per_line = pd.concat([per_line, pd.DataFrame({"line": list(numbers.values()), "facet": facets})], ignore_index=True)
    data["best"] = data["best"].fillna(False).astype(bool)
    return data, per_line


def curves_chart(
    curves: frames.Curves, *, metric: str, colors: ColorScale, facet_title: str = "", smoothing: float = 0.0, log_y: bool = False, title: str = "", max_points: int = 0
):
    """A metric against epoch: colour = learning rate, dash = train/validation, a column per facet value.

    Smoothed lines over faint raw ones, bands for groups of repeats, a diamond at each best
    epoch, dotted rules where a continued run starts its next stage. Click a legend entry to
    highlight its learning rate. `max_points` > 0 draws long curves thinned (`thin`).
    """
    points = curves.points
    data, per_line = compact(curves, smoothing, max_points)
    grouped = bool((points["role"] == "mean").any())
    tooltips = _value_tooltips(metric, smoothing > 0, grouped)
    pick = alt.selection_point(name="pick", fields=["color"], bind="legend")
    color = colors.encoding()
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    x = alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d"))
    y_title = f"{metric} (log)" if log_y else metric
    base = alt.Chart().encode(x=x, color=color, detail=[alt.Detail("line:N"), alt.Detail("split:N")])
    # Marks carry aria=False: Vega-Lite would otherwise build an ARIA description string for every
    # point (thousands, each through Streamlit's expression interpreter); the runs table says it in words.
    drawn = alt.FieldOneOfPredicate(field="role", oneOf=["run", "mean"])
    # Streamlit's Vega evaluates expressions with its (slow, CSP-safe) interpreter, point by point:
    # filter only when there is something to leave out (group members, stage boundaries).
    filtered = not set(data["role"].dropna()) <= {"run", "mean"}

    def only_drawn(layer):
        return layer.transform_filter(drawn) if filtered else layer
    dash = alt.StrokeDash("split:N", scale=SPLIT_DASH, title="split", legend=SPLIT_LEGEND)
    layers = []
    if grouped:
        layers.append(
            base.mark_area(interpolate="linear", aria=False)
            .encode(y=alt.Y("low:Q", scale=y_scale, title=y_title), y2="high:Q", opacity=alt.condition(pick, alt.value(0.16), alt.value(0.03)))
            .transform_filter(alt.FieldEqualPredicate(field="role", equal="mean"))
        )
    if (points["role"] == "member").any():
        layers.append(
            base.mark_line(strokeWidth=0.9, aria=False)
            .encode(y=alt.Y("value:Q", scale=y_scale, title=y_title), strokeDash=alt.StrokeDash("split:N", scale=SPLIT_DASH, legend=None),
                    opacity=alt.condition(pick, alt.value(0.35), alt.value(0.04)), tooltip=_value_tooltips(metric, False, False))
            .transform_filter(alt.FieldEqualPredicate(field="role", equal="member"))
        )  # fmt: skip
    raw_opacity = 0.25 if smoothing > 0 else 0.95
    layers.append(
        only_drawn(
            base.mark_line(strokeWidth=1.2 if smoothing > 0 else 2, aria=False)
            .encode(y=alt.Y("value:Q", scale=y_scale, title=y_title), strokeDash=dash, opacity=alt.condition(pick, alt.value(raw_opacity), alt.value(0.05)), tooltip=tooltips)
        ).add_params(pick)
    )
    if smoothing > 0:
        layers.append(
            only_drawn(
                base.mark_line(strokeWidth=2.2, aria=False)
                .encode(y=alt.Y("smoothed:Q", scale=y_scale, title=y_title), strokeDash=dash, opacity=alt.condition(pick, alt.value(1.0), alt.value(0.06)), tooltip=tooltips)
            )
        )
    layers.append(
        base.mark_point(shape="diamond", filled=True, size=90, stroke="white", strokeWidth=1, aria=False)
        .encode(y=alt.Y("value:Q", scale=y_scale, title=y_title), opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)),
                tooltip=[alt.Tooltip("label:N", title="best epoch of"), *tooltips[1:]])
        .transform_filter(alt.FieldEqualPredicate(field="best", equal=True))
    )  # fmt: skip
    if not curves.boundaries.empty:
        layers.append(
            alt.Chart().mark_rule(strokeDash=[2, 3], color="#444", strokeWidth=1.2)
            .encode(x="epoch:Q", tooltip=[alt.Tooltip("epoch:Q", title="next stage starts after epoch", format=".0f")])
            .transform_filter(alt.FieldEqualPredicate(field="role", equal="boundary"))
        )  # fmt: skip
    lookup = alt.LookupData(data=per_line, key="line", fields=LOOKUP_FIELDS)
    facets = facet_order(points["facet"].dropna().astype(str)) if not points.empty else []
    if len(facets) > 1 or (facets and facets[0] != frames.NO_FACET):
        width = max(200, min(560, FULL_WIDTH // len(facets) - 45))
        layered = alt.layer(*layers).properties(width=width, height=HEIGHT)
        chart = (
            layered.facet(column=alt.Column("facet:N", sort=facets, title=facet_title or None, header=alt.Header(labelFontSize=13, labelFontWeight="bold")), data=data)
            .transform_lookup(lookup="line", from_=lookup)
            .resolve_scale(x="independent")
        )
    else:
        chart = alt.layer(*layers, data=data).transform_lookup(lookup="line", from_=lookup).properties(width=FULL_WIDTH - 200, height=HEIGHT + 40)
    return chart.properties(title=title) if title else chart


def sensitivity_chart(frame: pd.DataFrame, *, band: str = frames.CI95):
    """Best validation accuracy against lr (log x), one line per stage and model; error bars over
    repeats (the 95% Student-t interval of the mean, or min–max) and n beside each point; beside
    it the train–validation gap at the best epoch."""
    low, high = ("ci_low", "ci_high") if band == frames.CI95 else ("min", "max")
    stage = alt.Color("stage:N", scale=_stage_scale(frame["stage"]), title="stage")
    dash = alt.StrokeDash("model:N", title="model")
    x = alt.X("lr:Q", scale=alt.Scale(type="log"), title="learning rate", axis=LR_AXIS)
    tooltip = [
        alt.Tooltip("line:N", title="stage · model"), alt.Tooltip("lr_label:N", title="lr"),
        alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("ci_low:Q", title="95% CI low", format=".4f"),
        alt.Tooltip("ci_high:Q", title="95% CI high", format=".4f"), alt.Tooltip("min:Q", format=".4f"),
        alt.Tooltip("max:Q", format=".4f"), alt.Tooltip("n_runs:Q", title="runs"),
    ]  # fmt: skip

    def panel(measure, title, y_title):
        base = alt.Chart(frame).transform_filter(alt.FieldEqualPredicate(field="measure", equal=measure)).encode(x=x, color=stage)
        y = alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False))
        line = base.mark_line(point=alt.OverlayMarkDef(size=60, filled=True)).encode(y=y, strokeDash=dash, detail="line:N", tooltip=tooltip)
        bars = base.mark_rule(strokeWidth=1.5).encode(y=f"{low}:Q", y2=f"{high}:Q", detail="line:N", tooltip=tooltip)
        counts = base.mark_text(align="left", dx=7, dy=-7, fontSize=10).encode(y=y, text="n_label:N", detail="line:N")
        return alt.layer(bars, line, counts).properties(width=430, height=HEIGHT - 20, title=title)

    error = "95% interval of the mean" if band == frames.CI95 else "min–max"
    return alt.hconcat(
        panel("best_val_accuracy", f"Best validation accuracy (bars: {error} over repeats)", "best val accuracy"),
        panel("gap", "Train − validation accuracy at the best epoch", "gap"),
    ).resolve_scale(y="independent")


def lr_finder_chart(frame: pd.DataFrame):
    """lr-finder runs: loss against learning rate (log x), a rule at each suggested rate."""
    color = alt.Color("run_name:N", title="lr-finder run")
    x = alt.X("lr:Q", scale=alt.Scale(type="log"), title="learning rate", axis=LR_AXIS)
    line = alt.Chart(frame).mark_line(strokeWidth=2).encode(
        x=x, y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)), color=color,
        tooltip=[alt.Tooltip("run_name:N", title="run"), alt.Tooltip("step:Q"), alt.Tooltip("lr:Q", format=".3~e"), alt.Tooltip("loss:Q", format=".4~g")],
    )  # fmt: skip
    suggested = frame.dropna(subset=["suggested_lr"]).drop_duplicates("run_id")
    rules = alt.Chart(suggested).mark_rule(strokeDash=[4, 3], strokeWidth=1.5).encode(
        x="suggested_lr:Q", color=color, tooltip=[alt.Tooltip("run_name:N", title="run"), alt.Tooltip("suggested_lr:Q", title="suggested lr", format=".3~e")]
    )
    return alt.layer(line, rules).properties(width=FULL_WIDTH - 300, height=HEIGHT, title="Learning-rate finder: loss against learning rate")


# ---------------------------------------------------------------------------------------
# The page's form of a chart

# Properties only a top-level Vega-Lite spec may have.
TOP_LEVEL_ONLY = ("$schema", "config", "autosize", "padding", "background", "usermeta")


def page_spec(chart) -> dict:
    """`chart` as the Vega-Lite dict the page sends: the same chart, its data inline in the JSON.

    Streamlit moves a spec's top-level `data` and `datasets` into Arrow tables, and its front end
    turns those back into JavaScript rows one cell at a time: about 0.5 s for the 4,000 points x 6
    fields of 40 runs on a 2-core machine, seconds for 200 runs. Data inline in a nested view stay
    JSON, which the browser parses in milliseconds. So named datasets are written into the views
    that use them, and a chart with top-level data is wrapped in a one-view `vconcat` (the
    picture is the same). The chart is not validated again here: the builders' output is.
    """
    spec = chart.to_dict(validate=False)
    datasets = spec.pop("datasets", {})
    # Values written from pandas are typed already: no per-point parsing (Vega-Lite adds a
    # toNumber() for each point otherwise), unless a temporal field needs its strings parsed.
    typed = '"temporal"' not in json.dumps(spec)
    spec = _inline_data(spec, datasets, typed)
    if "data" not in spec:
        return spec
    top = {key: spec.pop(key) for key in TOP_LEVEL_ONLY if key in spec}
    params = spec.get("params", [])
    if params and all("views" in p or "select" not in p for p in params):
        top["params"] = spec.pop("params")  # a view inside a composition may not hold them
    return {**top, "vconcat": [spec]}


def _inline_data(node, datasets: dict, typed: bool):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "data" and isinstance(value, dict) and value.get("name") in datasets:
                out[key] = {**{k: v for k, v in value.items() if k != "name"}, "values": datasets[value["name"]]}
                if typed:
                    out[key]["format"] = {**out[key].get("format", {}), "parse": None}
            else:
                out[key] = _inline_data(value, datasets, typed)
        return out
    if isinstance(node, list):
        return [_inline_data(item, datasets, typed) for item in node]
    return node
