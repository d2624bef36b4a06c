"""The forest plot's Vega-Lite dict (`app.charts.forest.forest_spec`, written as a dict for speed)
is the spec Altair writes for the same chart: the reference below is the Altair chart the page drew
before, through the page's own `app.charts.spec.page_spec`. A change to the picture changes both."""

from __future__ import annotations

import json
import time

import altair as alt
import numpy as np
import pandas as pd
import pytest

from app.analysis import stats
from app.charts import builders, forest, spec
from app.charts import colors as palette
from app.data import synthetic
from train import contract

RATES = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
STAGES = list(contract.STAGES)


def altair_forest(table: pd.DataFrame, *, colors, margin: float, label: str, width: int = builders.FULL_WIDTH, bounds=None):
    """The forest plot as an Altair chart: what `forest.forest_spec` must write (see the module)."""
    frame, _ = forest.forest_frame(table)
    if frame.empty:
        return None
    panels = list(dict.fromkeys(frame["panel"]))
    per_row = min(len(panels), forest.PANELS_PER_ROW)
    plot_width = int(min(forest.MAX_PANEL_WIDTH, width / per_row - forest.LABEL_WIDTH - 16))
    height = int(frame.groupby("panel").size().max()) * forest.ROW_HEIGHT + 8
    charts = [_altair_panel(frame[frame["panel"] == panel], colors, margin, label, plot_width, height, bounds) for panel in panels]
    return alt.concat(*charts, columns=per_row, spacing=16).configure_view(stroke=None).configure_axis(labelFontSize=11, titleFontSize=11)


def _altair_panel(part, colors, margin, label, width, height, bounds):
    best = part.iloc[0]
    domain = forest.x_domain(part, margin, bounds)
    if bounds is not None:
        part = part.assign(ci_low=part["ci_low"].clip(*bounds), ci_high=part["ci_high"].clip(*bounds))
    badge_x = round(width * (1 - forest.BADGE_SHARE))
    scale = {"domain": domain, "range": [0, badge_x], "nice": False, "zero": False}
    x = alt.X("mean:Q", scale=alt.Scale(**scale), title=label, axis=alt.Axis(tickCount=4, format=".3~f"))
    y = alt.Y("group:N", sort=list(part["group"]), title=None, axis=alt.Axis(labelLimit=forest.LABEL_WIDTH, labelFontSize=11, ticks=False, domain=False))
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
        alt.Chart(band).mark_rect(color="#d9d9d9", opacity=0.55).encode(x=alt.X("low:Q", scale=alt.Scale(**scale)), x2="high:Q"),
        alt.Chart(pd.DataFrame({"mean": [best["mean"]]})).mark_rule(color="#555", strokeDash=[3, 3], strokeWidth=1).encode(x="mean:Q"),
        base.mark_rule(strokeWidth=2.6).encode(x=alt.X("ci_low:Q", scale=alt.Scale(**scale, clamp=True)), x2="ci_high:Q", color=color, tooltip=tooltip),
        base.mark_point(filled=True, size=70, opacity=1).encode(
            x=x, color=color, tooltip=tooltip,
            shape=alt.condition(is_best, alt.value("diamond"), alt.value("circle")),
            size=alt.condition(is_best, alt.value(150), alt.value(60)),
            stroke=alt.condition(is_best, alt.value("#111"), alt.value("white")),
        ),  # fmt: skip
        *(
            base.mark_text(align="left", dx=8, fontSize=11, fontWeight=weight)
            .encode(x=alt.value(badge_x), text="badge:N",
                    color=alt.condition(alt.FieldEqualPredicate(field="verdict", equal=stats.WORSE), alt.value("#8a8a8a"), alt.value("#222")))
            .transform_filter(predicate)
            for weight, predicate in (("bold", is_best), ("normal", {"not": is_best}))
        ),  # fmt: skip
    ]
    return alt.layer(*layers).properties(width=width, height=height, title=alt.TitleParams(str(best["panel"]), anchor="start", fontSize=13))


def comparison(seeds: int = 4, stages=STAGES, models=("mobilenet_v2",), one_run: bool = False, spread: float = 0.01) -> stats.Comparison:
    """The groups of a synthetic store's runs, as the page compares them: every stage x rate x model,
    `seeds` runs each (one run only for the last rate with `one_run`: no interval, `cannot tell`)."""
    rng = np.random.default_rng(7)
    rows = []
    for model in models:
        for stage in stages:
            for k, lr in enumerate(RATES):
                for seed in range(1 if one_run and k == len(RATES) - 1 else seeds):
                    value = 0.9 - 0.04 * abs(k - 1) - 0.01 * STAGES.index(stage) + rng.normal(0, spread)
                    params = synthetic.params_for(lr, stage, model=model, seed=seed)
                    rows.append({"run_id": f"{model}-{stage}-{k}-{seed}", "run_name": f"{stage} lr={lr:g}", "stage": stage, "model": model, "status": "FINISHED",
                                 "pruned": False, "params": params, "value": value, "test_accuracy": np.nan})  # fmt: skip
    return stats.compare(pd.DataFrame(rows), stats.BEST_VAL_ACCURACY)


def both(comp: stats.Comparison, **kwargs) -> tuple[dict | None, dict | None]:
    colors = palette.ColorScale([stats.lr_text(lr) for lr in sorted(RATES)], palette.ordered_colors(len(RATES)), "learning rate")
    args = {"colors": colors, "margin": comp.margin, "label": comp.statistic.label, **kwargs}
    reference = altair_forest(comp.table, **args)
    return forest.forest_spec(comp.table, **args), (spec.page_spec(reference) if reference is not None else None)


@pytest.mark.parametrize(
    "case",
    [
        {"comp": {}, "bounds": (0.0, 1.0)},  # four stages, five groups each: the bench's store
        {"comp": {}, "bounds": None, "width": 700},
        {"comp": {"one_run": True, "seeds": 2, "spread": 0.2}, "bounds": (0.0, 1.0)},  # one-run groups; two seeds' intervals past 1, clipped
        {"comp": {"models": ("mobilenet_v2", "resnet50"), "stages": ["full", "head", "scratch"]}, "bounds": (0.0, 1.0)},  # six panels, two rows
        {"comp": {"stages": ["full"], "seeds": 3}, "bounds": None, "margin": 0.05},
    ],
)
def test_the_forest_dict_is_the_spec_altair_writes_for_the_same_chart(case):
    comp = comparison(**case["comp"])
    ours, altairs = both(comp, **{k: v for k, v in case.items() if k != "comp"})
    assert ours is not None
    assert json.loads(json.dumps(ours)) == altairs  # the same dict, values and types, as the page sends it


def test_nan_and_infinite_values_are_written_as_altair_writes_them():
    table = comparison(seeds=3, stages=["full"]).table
    table.loc[table.index[1], ["ci_low", "ci_high"]] = [np.nan, np.inf]
    table.loc[table.index[2], "difference"] = -np.inf
    ours, altairs = both(stats.Comparison(stats.BEST_VAL_ACCURACY, table), bounds=None)
    assert json.loads(json.dumps(ours)) == altairs
    values = ours["concat"][0]["layer"][2]["data"]["values"]
    assert values[1]["ci_low"] is None and values[1]["ci_high"] is None and values[2]["difference"] is None
    json.dumps(ours, allow_nan=False)  # strict JSON: no NaN or Infinity


def test_an_empty_comparison_draws_nothing():
    empty = stats.Comparison(stats.BEST_VAL_ACCURACY, pd.DataFrame(columns=[*stats.TABLE_HEAD, *stats.TABLE_TAIL]))
    assert both(empty) == (None, None)


def test_the_forest_dict_of_a_thousand_runs_takes_milliseconds():
    """1,000 runs (4 stages x 5 rates x 50 seeds): Altair's chart took 0.6-0.9 s on this machine."""
    comp = comparison(seeds=50)
    assert comp.table["n"].sum() == 1000
    colors = palette.ColorScale([stats.lr_text(lr) for lr in sorted(RATES)], palette.ordered_colors(len(RATES)), "learning rate")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        forest.forest_spec(comp.table, colors=colors, margin=comp.margin, label=comp.statistic.label, bounds=(0.0, 1.0))
        times.append(time.perf_counter() - started)
    assert min(times) < 0.1, times
