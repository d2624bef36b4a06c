"""Chart specs: encodings, one colour per learning rate everywhere, valid Vega-Lite, hostile text kept as data."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pandas as pd
import pytest
import vl_convert as vlc

from app import charts, frames, report, views
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import EDGE_EXPERIMENT, HOSTILE_NAME, HOSTILE_PARAM, inline_values, load
from train import contract

# Every field a chart may encode or filter on: fixed names, never a user's string.
KNOWN_FIELDS = {
    "line", "label", "lr", "lr_label", "stage", "schedule", "model", "color", "facet", "split", "epoch", "value",
    "smoothed", "low", "high", "n_runs", "best", "role", "measure", "mean", "run_name", "step", "loss", "suggested_lr",
    "ci_low", "ci_high", "min", "max", "n_label",
}  # fmt: skip


@pytest.fixture(scope="module")
def lab(lab_store):
    _, runs, history = load(lab_store["uri"])
    return runs, history


def spec_of(chart) -> dict:
    spec = chart.to_dict()
    spec.pop("datasets", None)
    return spec


def fields(node) -> set[str]:
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "field" and isinstance(value, str):
                found.add(value)
            found |= fields(value)
    elif isinstance(node, list):
        for item in node:
            found |= fields(item)
    return found


def encodings(node, channel) -> list[dict]:
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("encoding"), dict) and channel in node["encoding"]:
            found.append(node["encoding"][channel])
        for value in node.values():
            found += encodings(value, channel)
    elif isinstance(node, list):
        for item in node:
            found += encodings(item, channel)
    return found


def curves_chart(runs, history, options, all_runs=None):
    curves = frames.curves(history, runs, options, all_runs=all_runs)
    colors = charts.color_scale(all_runs if all_runs is not None else runs, options.color)
    return curves, charts.curves_chart(curves, metric=options.metric, colors=colors, facet_title=options.facet, smoothing=options.smoothing, log_y=options.log_y)


def test_curve_chart_encodings(lab):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    _, chart = curves_chart(training, history, frames.CurveOptions(smoothing=0.6))
    spec = spec_of(chart)
    assert spec["facet"]["column"]["field"] == "facet"
    assert spec["facet"]["column"]["sort"] == list(contract.STAGES)
    color = encodings(spec, "color")[0]
    assert color["field"] == "color"
    assert color["scale"]["domain"] == sorted(set(training["lr_label"]), key=float)
    dash = encodings(spec, "strokeDash")[0]
    assert dash["field"] == "split" and dash["scale"]["domain"] == [frames.TRAIN, frames.VALIDATION]
    tooltip_fields = {t["field"] for t in encodings(spec, "tooltip")[0]}
    assert {"label", "lr_label", "stage", "schedule", "epoch", "value", "smoothed"} <= tooltip_fields
    params = spec.get("params", []) + [p for layer in spec["spec"]["layer"] for p in layer.get("params", [])]
    assert params[0]["select"]["fields"] == ["color"] and params[0]["bind"] == "legend"
    marks = [layer["mark"]["type"] for layer in spec["spec"]["layer"]]
    assert marks.count("line") == 2 and "point" in marks  # raw + smoothed lines, best-epoch marks
    assert fields(spec) <= KNOWN_FIELDS
    vlc.vegalite_to_vega(json.dumps(chart.to_dict()), vl_version=report.VL_VERSION)  # compiles


def test_loss_uses_a_log_scale_and_groups_draw_bands(lab):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    _, chart = curves_chart(training, history, frames.CurveOptions(metric=contract.LOSS, log_y=True, group=True, facet=frames.NO_FACET))
    spec = spec_of(chart)
    y = encodings(spec, "y")
    assert all(enc["scale"]["type"] == "log" for enc in y)
    assert "area" in [layer["mark"]["type"] for layer in spec["layer"]]
    vlc.vegalite_to_vega(json.dumps(chart.to_dict()), vl_version=report.VL_VERSION)


def test_the_same_rate_has_the_same_colour_whatever_the_filter(lab):
    runs, history = lab

    def colour_of(selection, rate):
        _, chart = curves_chart(selection, history, frames.CurveOptions(), all_runs=runs)
        scale = encodings(spec_of(chart), "color")[0]["scale"]
        return dict(zip(scale["domain"], scale["range"], strict=True))[rate]

    head = runs[runs["stage"] == "head"]
    only_one_rate = runs[(runs["lr_label"] == "0.001") & (runs["stage"] == "full")]
    assert colour_of(head, "0.001") == colour_of(only_one_rate, "0.001") == colour_of(runs, "0.001")


def test_ordered_palette_is_distinct_and_ordered():
    for n in range(1, 25):
        colors = charts.ordered_colors(n)
        assert len(colors) == n == len(set(colors))
    assert charts.ordered_colors(10) == charts.LR_ANCHORS
    for n in range(2, 9):  # the lowest and the highest rate of a typical study must not both be near-black
        assert {charts.ordered_colors(n)[0], charts.ordered_colors(n)[-1]}.isdisjoint({charts.LR_ANCHORS[0], charts.LR_ANCHORS[-1]})


def test_continued_runs_draw_stage_boundaries(lab):
    runs, history = lab
    finetune = runs[runs["stage"] == "finetune"]
    _, chart = curves_chart(finetune, history, frames.CurveOptions(join=True), all_runs=runs)
    spec = spec_of(chart)
    assert "rule" in [layer["mark"]["type"] for layer in spec["spec"]["layer"]]
    svg = report.to_svg(chart)
    assert "head → finetune" in svg


def test_sensitivity_and_finder_charts_render(lab):
    runs, history = lab
    built = views.build(runs, history, frames.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    spec = spec_of(built.sensitivity_chart)
    x = encodings(spec, "x")
    assert all(enc["scale"]["type"] == "log" for enc in x)
    assert {enc["field"] for enc in encodings(spec, "color")} == {"stage"}
    assert len(spec["hconcat"]) == 2
    assert [f.name for f in built.figures()] == ["curves-accuracy", "lr-sensitivity", "schedules", "lr-finder"]
    for figure in built.figures():
        assert report.to_svg(figure.chart).startswith("<svg")


def test_hostile_names_and_params_stay_data(lab_store):
    _, runs, history = load(lab_store["uri"], EDGE_EXPERIMENT)
    hostile = runs[runs["run_id"] == lab_store["edge"]["hostile"]]
    assert hostile["run_name"].iloc[0] == HOSTILE_NAME
    _, chart = curves_chart(hostile, history, frames.CurveOptions(color=contract.PARAM_SCHEDULE))
    spec = spec_of(chart)
    text = json.dumps(spec)
    assert fields(spec) <= KNOWN_FIELDS
    assert "<script>" not in text and "alert(1)" not in text.replace(json.dumps(HOSTILE_PARAM)[1:-1], "")
    data = chart.to_dict()["datasets"]
    assert any(row.get("label") == HOSTILE_NAME for rows in data.values() for row in rows)
    svg = report.to_svg(chart)  # the legend shows the hostile schedule value as text
    assert "<img" not in svg and "&lt;img src=x onerror=alert(1)&gt;" in svg


def test_the_page_sends_each_chart_with_its_data_inline(lab_store, lab):
    """What the page hands Streamlit: no top-level data or datasets (Streamlit would turn them into
    Arrow tables the browser unpacks cell by cell), the same data inline, a spec Vega-Lite compiles
    to the same picture, and hostile names still only data."""
    runs, history = lab
    built = views.build(runs, history, frames.CurveOptions(join=True, smoothing=0.5), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    grouped = views.build(runs, history, frames.CurveOptions(group=True, members=True, facet=frames.NO_FACET), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    _, edge_runs, edge_history = load(lab_store["uri"], EDGE_EXPERIMENT)
    hostile = views.build(edge_runs, edge_history, frames.CurveOptions(color=contract.PARAM_SCHEDULE), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    cases = [(b, name) for b in (built, grouped, hostile) for name in ("curves", "sensitivity", "schedule", "lr_finder") if getattr(b, f"{name}_chart") is not None]
    assert len(cases) >= 9
    for source, name in cases:
        chart, page = getattr(source, f"{name}_chart"), source.page_spec(name)
        assert not {"data", "datasets"} & set(page), name
        datasets = chart.to_dict()["datasets"]
        assert sorted(map(json.dumps, inline_values(page))) == sorted(json.dumps(rows) for rows in datasets.values() for _ in range(count_uses(chart, rows))), name
        assert fields(page) <= KNOWN_FIELDS
        drawn, expected = vlc.vegalite_to_svg(json.dumps(page), vl_version=report.VL_VERSION), report.to_svg(chart)
        assert marks_of(drawn) == marks_of(expected), name  # the same lines, points and axes, at the same places
        assert all(abs(a - b) <= 6 for a, b in zip(size_of(drawn), size_of(expected), strict=True)), name  # a wrapping view's few pixels of padding
    page = hostile.page_spec("curves")
    assert HOSTILE_NAME in {row.get("label") for rows in inline_values(page) for row in rows}  # as a data value
    outside_data = json.dumps(page)
    for rows in inline_values(page):
        outside_data = outside_data.replace(json.dumps(rows), "[]")
    assert "<script>" not in outside_data and "alert(1)" not in outside_data.replace(json.dumps(HOSTILE_PARAM)[1:-1], "")  # the legend's domain holds it as text


def marks_of(svg: str) -> list[str]:
    """The drawn paths of an SVG (lines, points, rules, axes), without the groups' frames."""
    return sorted(re.findall(r'<path(?! class="(?:background|foreground)")[^>]*>', svg))


def size_of(svg: str) -> tuple[float, float]:
    return float(re.search(r'width="([0-9.]+)"', svg).group(1)), float(re.search(r'height="([0-9.]+)"', svg).group(1))


def count_uses(chart, rows) -> int:
    """How many views of `chart` refer to the dataset holding `rows` (each gets its own inline copy)."""
    spec = chart.to_dict()
    name = next(key for key, value in spec["datasets"].items() if value == rows)
    return json.dumps({k: v for k, v in spec.items() if k != "datasets"}).count(json.dumps(name))


def test_long_curves_are_thinned_for_the_page_keeping_their_shape():
    epochs = 3000
    value = np.sin(np.arange(epochs) / 200.0)
    value[1234] = 9.0  # a spike
    long = pd.DataFrame({"line": "a", "split": frames.VALIDATION, "epoch": np.arange(epochs), "value": value, "best": np.arange(epochs) == 2100})
    short = pd.DataFrame({"line": "b", "split": frames.TRAIN, "epoch": np.arange(40), "value": np.arange(40.0), "best": False})
    points = pd.concat([long, short], ignore_index=True)
    thinned = charts.thin(points, 500)
    kept = thinned[thinned["line"] == "a"]
    assert len(kept) <= 500 + 3
    assert {0, epochs - 1, 2100, 1234} <= set(kept["epoch"])  # first, last, best, the spike
    assert kept["value"].min() == value.min() and kept["epoch"].is_monotonic_increasing
    pd.testing.assert_frame_equal(thinned[thinned["line"] == "b"], short.set_axis(range(epochs, epochs + 40)))
    assert charts.thin(short, 500) is short
