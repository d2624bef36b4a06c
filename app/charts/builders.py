"""Altair chart builders: pure functions from the frames in `app.analysis.frames` to charts.

One chart per question; the learning rate has one colour everywhere (`app.charts.colors`). Run
names, params and tags only ever travel as data values, never as field names or expressions, so
nothing a user typed into a run name is evaluated by Vega.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from app.analysis import curve_data, frames
from app.charts import labels
from app.charts.colors import ColorScale, natural_order, ordered_colors
from train import contract

# Curves carry up to a few hundred thousand points by design; Altair's 5,000-row guard would refuse them.
alt.data_transformers.disable_max_rows()

SPLIT_DASH = alt.Scale(domain=[frames.TRAIN, frames.VALIDATION], range=[[5, 3], [1, 0]])
SPLIT_LEGEND = alt.Legend(orient="top", direction="horizontal", symbolOpacity=1, symbolStrokeWidth=2, symbolStrokeColor="#333", symbolSize=300)
LR_AXIS = alt.Axis(format="~e", values=[10.0**k for k in range(-12, 3)])
HEIGHT = 320
# The width the curve chart fills: the main area of a 1600 px wide page beside the open sidebar (a
# faceted chart cannot follow the browser's width: Vega-Lite sizes facets in pixels only).
FULL_WIDTH = 1140
Y_AXIS_WIDTH = 40  # the y axis and its title, beside each column
# When another param than lr varies (a schedule, a warm-up), it takes the dash; the split then takes the width.
VARIANT_DASHES = [[1, 0], [8, 4], [2, 3], [10, 3, 2, 3], [4, 2], [14, 5]]
SPLIT_WIDTH = alt.Scale(domain=[frames.TRAIN, frames.VALIDATION], range=[1.0, 2.6])
# Points per line and split the page draws; longer curves are thinned for the browser (exports keep all).
PAGE_MAX_POINTS = 500


def facet_order(values) -> list[str]:
    """Stages in training order, then anything else (joined chains, other params) sorted."""
    present = list(dict.fromkeys(values))
    rank = {stage: i for i, stage in enumerate(contract.STAGES)}
    return sorted(present, key=lambda v: (0, rank[v], "") if v in rank else (1, 0, v))


LOOKUP_FIELDS = ["color", "variant", "facet", "label", "lr_label", "stage", "schedule", "n_runs", "note", "note_x", "note_y"]


def _value_tooltips(metric: str, smoothed: bool, grouped: bool, joined: bool = False) -> list[alt.Tooltip]:
    return [
        alt.Tooltip("label:N", title="group" if grouped else "run"),
        alt.Tooltip("lr_label:N", title="lr"),
        alt.Tooltip("stage:N", title="stage"),
        alt.Tooltip("schedule:N", title="schedule"),
        alt.Tooltip("split:N", title="split"),
        # A continued run's x is its epoch on the joined curve; the runs table counts from its own start.
        *([alt.Tooltip("run_epoch:Q", title="epoch of its run"), alt.Tooltip("epoch:Q", title="epoch of the joined curve")] if joined else [alt.Tooltip("epoch:Q", title="epoch")]),
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


def compact(
    curves: curve_data.Curves, smoothing: float, max_points: int = 0, lower_is_better: bool = False, log_y: bool = False, *,
    size: tuple[float, float] = (FULL_WIDTH, HEIGHT), domain: list[float] | None = None, chance: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """The points as the browser gets them: per point only what varies (line number, split, epoch,
    values), per line the rest (colour, dash, facet, names, the label placed near its best point:
    `app.charts.labels`, for a plot of `size` pixels and y `domain`), joined back by a Vega lookup.
    A fifth of the bytes, and Vega builds that many fewer objects. `max_points` > 0 thins long
    curves (`thin`); `chance` adds one chance-level row per column."""
    domain = domain or labels.y_domain(curves.points, log_y)
    notes = labels.place(curves.points, lower_is_better=lower_is_better, log_y=log_y, width=size[0], height=size[1], domain=domain, chance=chance)
    points = thin(curves.points, max_points)
    points = points.merge(notes, on="line", how="left").fillna({"note": ""}).set_axis(points.index)
    codes, lines = pd.factorize(points["line"])
    per_line = points.assign(line=codes).drop_duplicates("line")[["line", *LOOKUP_FIELDS]]
    keep = ["split", "epoch", "value", "best", "role"]
    if not curves.boundaries.empty:
        keep.append("run_epoch")
    if smoothing > 0:
        keep.append("smoothed")
    if (points["role"] == "mean").any():
        keep += ["low", "high"]
    data = points[keep].assign(line=codes)
    facets = points["facet"].drop_duplicates().tolist()
    extra = []  # rows of their own, one "line" each: where a continued run starts its next stage, the chance level
    if not curves.boundaries.empty:
        extra.append(curves.boundaries.assign(role="boundary")[["facet", "epoch", "role"]])
    if chance is not None and facets:
        extra.append(pd.DataFrame({"facet": facets, "rule_y": chance, "role": "chance"}))  # no `value`: no line draws it
    if extra:
        rules = pd.concat(extra, ignore_index=True)
        rules["line"] = range(len(lines), len(lines) + len(rules))
        data = pd.concat([data, rules.drop(columns="facet")], ignore_index=True)
        per_line = pd.concat([per_line, rules[["line", "facet"]]], ignore_index=True)
    data["best"] = data["best"].fillna(False).astype(bool)
    return data, per_line


def curves_chart(
    curves: curve_data.Curves, *, metric: str, colors: ColorScale, facet_title: str = "", smoothing: float = 0.0, log_y: bool = False, title: str = "", max_points: int = 0,
    chance: float | None = None, best_labels: bool = True,
):
    """A metric against epoch: colour = learning rate, a column per facet value; dash = train/validation,
    or, when another param varies between the runs of a column (`Curves.variant_params`, e.g. the
    schedule), dash = that param and line width = train (thin) / validation (thick).

    Smoothed lines over faint raw ones, bands for groups of repeats, a diamond at each best epoch
    with the rate and value written beside it, dotted rules where a continued run starts its next
    stage, a dashed rule at the `chance` level (1 / classes, on accuracy). Click a legend entry to
    highlight its learning rate. `max_points` > 0 draws long curves thinned (`thin`).
    """
    points = curves.points
    facets = facet_order(points["facet"].dropna().astype(str)) if not points.empty else []
    faceted = len(facets) > 1 or bool(facets and facets[0] != frames.NO_FACET)
    # Every column on a 1600 px page, however many there are (a joined view adds "head → finetune").
    size = (max(120, min(900, FULL_WIDTH // len(facets) - Y_AXIS_WIDTH)), HEIGHT) if faceted else (FULL_WIDTH - Y_AXIS_WIDTH - 40, HEIGHT + 40)
    # Fixed here, not left to Vega: the labels are placed in pixels (`app.charts.labels`).
    domain = labels.y_domain(points, log_y, [chance] if chance is not None else [])
    data, per_line = compact(curves, smoothing, max_points, lower_is_better=_lower_is_better(metric), log_y=log_y, size=size, domain=domain, chance=chance)
    grouped = bool((points["role"] == "mean").any())
    joined = not curves.boundaries.empty
    tooltips = _value_tooltips(metric, smoothing > 0, grouped, joined)
    pick = alt.selection_point(name="pick", fields=["color"], bind="legend")
    y_scale = alt.Scale(type="log", domain=domain, nice=False) if log_y else alt.Scale(zero=False, domain=domain, nice=False)
    y_title = f"{metric} (log)" if log_y else metric
    # Each column's x range is its epochs exactly (no rounding to nice numbers): the labels' pixels depend on it.
    x = alt.X("epoch:Q", title="epoch of the joined curve" if joined and facet_title != contract.PARAM_STAGE else "epoch", scale=alt.Scale(nice=False), axis=alt.Axis(tickMinStep=1, format="d"))
    base = alt.Chart().encode(x=x, color=colors.encoding(), detail=[alt.Detail("line:N"), alt.Detail("split:N")])
    dash, width = _dash_and_width(curves)
    quiet_dash, quiet_width = _dash_and_width(curves, legend=False)
    # Marks carry aria=False: Vega-Lite would otherwise build an ARIA description string for every
    # point (thousands, each through Streamlit's expression interpreter); the runs table says it in words.
    drawn = alt.FieldOneOfPredicate(field="role", oneOf=["run", "mean"])
    # Streamlit's Vega evaluates expressions with its (slow, CSP-safe) interpreter, point by point:
    # filter only when there is something to leave out (group members, stage boundaries).
    filtered = not set(data["role"].dropna()) <= {"run", "mean", "chance"}

    def only_drawn(layer):
        return layer.transform_filter(drawn) if filtered else layer

    def y(field):
        return alt.Y(f"{field}:Q", scale=y_scale, title=y_title)

    layers = []
    if grouped:
        layers.append(
            base.mark_area(interpolate="linear", aria=False)
            .encode(y=y("low"), y2="high:Q", opacity=alt.condition(pick, alt.value(0.16), alt.value(0.03)))
            .transform_filter(alt.FieldEqualPredicate(field="role", equal="mean"))
        )
    if (points["role"] == "member").any():
        layers.append(
            base.mark_line(strokeWidth=0.9, aria=False)
            .encode(y=y("value"), strokeDash=quiet_dash, opacity=alt.condition(pick, alt.value(0.35), alt.value(0.04)), tooltip=_value_tooltips(metric, False, False, joined))
            .transform_filter(alt.FieldEqualPredicate(field="role", equal="member"))
        )  # fmt: skip
    raw_opacity = 0.25 if smoothing > 0 else 0.95
    raw_width = width if smoothing <= 0 or curves.variant_params else alt.value(1.2)
    layers.append(
        only_drawn(
            base.mark_line(aria=False).encode(y=y("value"), strokeDash=dash, strokeWidth=raw_width, opacity=alt.condition(pick, alt.value(raw_opacity), alt.value(0.05)), tooltip=tooltips)
        ).add_params(pick)
    )
    if smoothing > 0:
        smooth_width = quiet_width if curves.variant_params else alt.value(2.2)
        layers.append(
            only_drawn(
                base.mark_line(aria=False)
                .encode(y=y("smoothed"), strokeDash=quiet_dash, strokeWidth=smooth_width, opacity=alt.condition(pick, alt.value(1.0), alt.value(0.06)), tooltip=tooltips)
            )
        )  # fmt: skip
    best_epoch = [alt.Tooltip("label:N", title="best epoch of"), *tooltips[1:]]
    best_only = alt.FieldEqualPredicate(field="best", equal=True)
    layers.append(
        base.mark_point(shape="diamond", filled=True, size=90, stroke="white", strokeWidth=1, aria=False)
        .encode(y=y("value"), opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)), tooltip=best_epoch)
        .transform_filter(best_only)
    )
    # The numbers beside the curves: rate and value near each labelled line's best point, placed in
    # `app.charts.labels` (top-left corner of the text), never on another label nor on a best point.
    if best_labels:
        layers.append(
            base.mark_text(align="left", baseline="top", fontSize=11, fontWeight="bold", aria=False)
            .encode(x=alt.X("note_x:Q"), y=y("note_y"), text=alt.Text("note:N"), opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)))
            .transform_filter(best_only)
        )
    if chance is not None:
        layers.append(
            alt.Chart().mark_rule(strokeDash=[6, 4], color="#666", strokeWidth=1.3)
            .encode(y=y("rule_y"), tooltip=[alt.Tooltip("rule_y:Q", title="chance level (1 / classes)", format=".3f")])
            .transform_filter(alt.FieldEqualPredicate(field="role", equal="chance"))
        )  # fmt: skip
    if joined:
        layers.append(
            alt.Chart().mark_rule(strokeDash=[2, 3], color="#444", strokeWidth=1.2)
            .encode(x="epoch:Q", tooltip=[alt.Tooltip("epoch:Q", title="next stage starts after epoch", format=".0f")])
            .transform_filter(alt.FieldEqualPredicate(field="role", equal="boundary"))
        )  # fmt: skip
    lookup = alt.LookupData(data=per_line, key="line", fields=LOOKUP_FIELDS)
    if faceted:
        layered = alt.layer(*layers).properties(width=size[0], height=size[1])
        chart = (
            layered.facet(column=alt.Column("facet:N", sort=facets, title=facet_title or None, header=alt.Header(labelFontSize=13, labelFontWeight="bold")), data=data)
            .transform_lookup(lookup="line", from_=lookup)
            .resolve_scale(x="independent")
        )
    else:
        chart = alt.layer(*layers, data=data).transform_lookup(lookup="line", from_=lookup).properties(width=size[0], height=size[1])
    return chart.properties(title=title) if title else chart


def _lower_is_better(metric: str) -> bool:
    return frames.split_metric(contract.LOSS)[0] in metric


def _dash_and_width(curves: curve_data.Curves, legend: bool = True):
    """The strokeDash and strokeWidth encodings of the curves (see `curves_chart`); without their
    legends for a second layer (the first one draws them)."""
    top = {"orient": "top", "direction": "horizontal", "symbolStrokeColor": "#333"}
    # One split only (the learning rate is logged for training alone): its legend would say nothing.
    legend = legend and curves.points["split"].nunique() > 1
    if not curves.variant_params:
        return alt.StrokeDash("split:N", scale=SPLIT_DASH, title="split", legend=SPLIT_LEGEND if legend else None), alt.value(2)
    domain = sorted(curves.points["variant"].dropna().astype(str).unique(), key=natural_order)
    dash = alt.StrokeDash(
        "variant:N", scale=alt.Scale(domain=domain, range=VARIANT_DASHES[: len(domain)]), title=", ".join(curves.variant_params),
        legend=alt.Legend(**top, symbolStrokeWidth=2, symbolSize=500, labelLimit=260),
    )  # fmt: skip
    title = "split (line width)"
    width = alt.StrokeWidth("split:N", scale=SPLIT_WIDTH, title=title, legend=alt.Legend(**top, symbolSize=300) if legend else None)
    return dash, width


def sensitivity_chart(frame: pd.DataFrame, *, band: str = frames.CI95, colors: ColorScale | None = None):
    """Best validation accuracy against lr (log x), one grey line per stage and model (told apart by
    dash), each point and its error bar in its learning rate's colour (`colors`: as on every chart);
    error bars over repeats (the 95% Student-t interval of the mean, or min–max); n beside each point
    where the groups differ in it (else once, in the title); beside it the train–validation gap at
    the best epoch."""
    low, high = ("ci_low", "ci_high") if band == frames.CI95 else ("min", "max")
    colors = colors or ColorScale(sorted(frame["lr_label"].unique(), key=natural_order), ordered_colors(frame["lr_label"].nunique()), "learning rate")
    rate = alt.Color("lr_label:N", scale=alt.Scale(domain=colors.domain, range=colors.range), title="learning rate", legend=None)
    dash = alt.StrokeDash("line:N", title="stage · model", legend=alt.Legend(orient="top", direction="horizontal", symbolStrokeColor="#333", symbolSize=400, labelLimit=300))
    x = alt.X("lr:Q", scale=alt.Scale(type="log"), title="learning rate", axis=LR_AXIS)
    tooltip = [
        alt.Tooltip("line:N", title="stage · model"), alt.Tooltip("lr_label:N", title="lr"),
        alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("ci_low:Q", title="95% CI low", format=".4f"),
        alt.Tooltip("ci_high:Q", title="95% CI high", format=".4f"), alt.Tooltip("min:Q", format=".4f"),
        alt.Tooltip("max:Q", format=".4f"), alt.Tooltip("n_runs:Q", title="runs"),
    ]  # fmt: skip
    counts = frame["n_runs"].unique()
    each = f", n = {counts[0]} each" if len(counts) == 1 else ""

    def panel(measure, title, y_title):
        base = alt.Chart(frame).transform_filter(alt.FieldEqualPredicate(field="measure", equal=measure)).encode(x=x)
        y = alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False))
        line = base.mark_line(color="#777", strokeWidth=1.5).encode(y=y, strokeDash=dash, detail="line:N", tooltip=tooltip)
        bars = base.mark_rule(strokeWidth=2).encode(y=f"{low}:Q", y2=f"{high}:Q", color=rate, detail="line:N", tooltip=tooltip)
        points = base.mark_point(size=70, filled=True, opacity=1).encode(y=y, color=rate, tooltip=tooltip)
        layers = [line, bars, points]
        if len(counts) > 1:
            layers.append(base.mark_text(align="left", dx=7, dy=-7, fontSize=10).encode(y=y, text="n_label:N", detail="line:N"))
        return alt.layer(*layers).properties(width=430, height=HEIGHT - 20, title=title)

    error = "95% interval of the mean" if band == frames.CI95 else "min–max"
    return alt.hconcat(
        panel("best_val_accuracy", f"Best validation accuracy (bars: {error} over repeats{each})", "best val accuracy"),
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
