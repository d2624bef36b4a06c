"""Chart specs: encodings, one colour per learning rate everywhere, valid Vega-Lite, hostile text kept as data."""

from __future__ import annotations

import json
import re
import time

import altair as alt
import numpy as np
import pandas as pd
import pytest
import vl_convert as vlc

from app import report
from app.analysis import curve_data, frames
from app.charts import builders as charts
from app.charts import colors as palette
from app.charts import labels
from app.page import views
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import EDGE_EXPERIMENT, HOSTILE_NAME, HOSTILE_PARAM, inline_values, load
from train import contract

# Every field a chart may encode or filter on: fixed names, never a user's string.
KNOWN_FIELDS = {
    "line", "label", "lr", "lr_label", "stage", "schedule", "model", "color", "facet", "split", "epoch", "value",
    "smoothed", "low", "high", "n_runs", "best", "role", "measure", "mean", "run_name", "step", "loss", "suggested_lr",
    "variant", "run_epoch", "note", "note_x", "note_y", "rule_y", "ci_low", "ci_high", "min", "max", "n_label",
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
    curves = curve_data.curves(history, runs, options, all_runs=all_runs)
    colors = palette.color_scale(all_runs if all_runs is not None else runs, options.color)
    return curves, charts.curves_chart(curves, metric=options.metric, colors=colors, facet_title=options.facet, smoothing=options.smoothing, log_y=options.log_y)


def test_curve_chart_encodings(lab):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    _, chart = curves_chart(training, history, curve_data.CurveOptions(smoothing=0.6))
    spec = spec_of(chart)
    assert spec["facet"]["column"]["field"] == "facet"
    assert spec["facet"]["column"]["sort"] == list(contract.STAGES)
    color = encodings(spec, "color")[0]
    assert color["field"] == "color"
    assert color["scale"]["domain"] == sorted(set(training["lr_label"]), key=float)
    dash = encodings(spec, "strokeDash")[0]  # the lab's `full` column compares schedules at one rate
    assert dash["field"] == "variant" and dash["title"] == "schedule" and dash["scale"]["domain"] == ["constant", "cosine", "exponential", "step"]
    assert encodings(spec, "strokeWidth")[0]["scale"]["domain"] == [frames.TRAIN, frames.VALIDATION]
    tooltip_fields = {t["field"] for t in encodings(spec, "tooltip")[0]}
    assert {"label", "lr_label", "stage", "schedule", "epoch", "value", "smoothed"} <= tooltip_fields
    params = spec.get("params", []) + [p for layer in spec["spec"]["layer"] for p in layer.get("params", [])]
    assert params[0]["select"]["fields"] == ["color"] and params[0]["bind"] == "legend"
    marks = [layer["mark"]["type"] for layer in spec["spec"]["layer"]]
    assert marks.count("line") == 2 and "point" in marks and marks.count("text") == 1  # raw + smoothed lines, best-epoch marks and their labels
    assert fields(spec) <= KNOWN_FIELDS
    vlc.vegalite_to_vega(json.dumps(chart.to_dict()), vl_version=report.VL_VERSION)  # compiles


def test_loss_uses_a_log_scale_and_groups_draw_bands(lab):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    _, chart = curves_chart(training, history, curve_data.CurveOptions(metric=contract.LOSS, log_y=True, group=True, facet=frames.NO_FACET))
    spec = spec_of(chart)
    y = encodings(spec, "y")
    assert all(enc["scale"]["type"] == "log" for enc in y)
    assert "area" in [layer["mark"]["type"] for layer in spec["layer"]]
    vlc.vegalite_to_vega(json.dumps(chart.to_dict()), vl_version=report.VL_VERSION)


def test_the_same_rate_has_the_same_colour_whatever_the_filter(lab):
    runs, history = lab

    def colour_of(selection, rate):
        _, chart = curves_chart(selection, history, curve_data.CurveOptions(), all_runs=runs)
        scale = encodings(spec_of(chart), "color")[0]["scale"]
        return dict(zip(scale["domain"], scale["range"], strict=True))[rate]

    head = runs[runs["stage"] == "head"]
    only_one_rate = runs[(runs["lr_label"] == "1e-3") & (runs["stage"] == "full")]
    assert colour_of(head, "1e-3") == colour_of(only_one_rate, "1e-3") == colour_of(runs, "1e-3")


def test_ordered_palette_is_distinct_and_ordered():
    for n in range(1, 25):
        colors = palette.ordered_colors(n)
        assert len(colors) == n == len(set(colors))
    assert palette.ordered_colors(10) == palette.LR_ANCHORS
    for n in range(2, 9):  # the lowest and the highest rate of a typical study must not both be near-black
        assert {palette.ordered_colors(n)[0], palette.ordered_colors(n)[-1]}.isdisjoint({palette.LR_ANCHORS[0], palette.LR_ANCHORS[-1]})


def test_continued_runs_draw_stage_boundaries(lab):
    runs, history = lab
    finetune = runs[runs["stage"] == "finetune"]
    _, chart = curves_chart(finetune, history, curve_data.CurveOptions(join=True), all_runs=runs)
    spec = spec_of(chart)
    assert "rule" in [layer["mark"]["type"] for layer in spec["spec"]["layer"]]
    svg = report.to_svg(chart)
    assert "head → finetune" in svg


def test_sensitivity_and_finder_charts_render(lab):
    runs, history = lab
    built = views.build(runs, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    spec = spec_of(built.sensitivity_chart)
    x = encodings(spec, "x")
    assert all(enc["scale"]["type"] == "log" for enc in x)
    # Colour = learning rate, with the curve chart's very colours (never the stage).
    colours = encodings(spec, "color")
    assert {enc["field"] for enc in colours} == {"lr_label"}
    curve_colour = encodings(spec_of(built.curves_chart), "color")[0]["scale"]
    assert all(enc["scale"]["domain"] == curve_colour["domain"] and enc["scale"]["range"] == curve_colour["range"] for enc in colours)
    assert len(spec["hconcat"]) == 2
    assert [f.name for f in built.figures()] == ["curves-accuracy", "lr-sensitivity", "schedules", "lr-finder"]
    for figure in built.figures():
        assert report.to_svg(figure.chart).startswith("<svg")


def test_hostile_names_and_params_stay_data(lab_store):
    _, runs, history = load(lab_store["uri"], EDGE_EXPERIMENT)
    hostile = runs[runs["run_id"] == lab_store["edge"]["hostile"]]
    assert hostile["run_name"].iloc[0] == HOSTILE_NAME
    _, chart = curves_chart(hostile, history, curve_data.CurveOptions(color=contract.PARAM_SCHEDULE))
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
    Arrow tables the browser unpacks cell by cell), the same data inline (a large dataset as a
    data: URL Vega loads itself), a spec Vega-Lite compiles to the same picture, and hostile names
    still only data."""
    runs, history = lab
    built = views.build(runs, history, curve_data.CurveOptions(join=True, smoothing=0.5), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    grouped = views.build(runs, history, curve_data.CurveOptions(group=True, members=True, facet=frames.NO_FACET), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    _, edge_runs, edge_history = load(lab_store["uri"], EDGE_EXPERIMENT)
    hostile = views.build(edge_runs, edge_history, curve_data.CurveOptions(color=contract.PARAM_SCHEDULE), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
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
    """The drawn paths of an SVG (lines, points, rules, axes), without the groups' frames, their
    coordinates to a millionth of a pixel (the order Vega sums in may move the last digits)."""
    paths = re.findall(r'<path(?! class="(?:background|foreground)")[^>]*>', svg)
    return sorted(re.sub(r"-?\d+\.\d{7,}", lambda number: f"{float(number.group()):.6f}", path) for path in paths)


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


@pytest.fixture(scope="module")
def demo_like(store_template, tmp_path_factory):
    """What `make demo-sweep` logs, in miniature: scratch runs at two rates under a constant and a
    warm-up + cosine schedule (same colour per rate: only the schedule tells them apart)."""
    import shutil

    from mlflow.tracking import MlflowClient

    from app.data import synthetic

    path = tmp_path_factory.mktemp("demo-like") / "mlflow.db"
    shutil.copy(store_template, path)
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    experiment_id = client.create_experiment("demo")
    for lr in (3e-3, 1e-3):
        for schedule, warmup in (("constant", "0"), ("cosine", "1")):
            params = {**synthetic.params_for(lr, "scratch", schedule=schedule, epochs=8), "warmup_epochs": warmup}
            synthetic.log_run(client, experiment_id, name=f"scratch lr={lr:g} {schedule}", params=params, values=synthetic.history(lr, "scratch", 8, schedule=schedule))
    _, runs, history = load(f"sqlite:///{path}", "demo")
    return runs, history


def test_a_param_that_varies_besides_lr_takes_the_dash_and_the_legend_names_it(demo_like):
    runs, history = demo_like
    curves, chart = curves_chart(runs, history, curve_data.CurveOptions())
    assert curves.variant_params == ["schedule", "warmup_epochs"]
    spec = spec_of(chart)
    dash = encodings(spec, "strokeDash")[0]
    assert dash["field"] == "variant" and dash["title"] == "schedule, warmup_epochs"
    assert dash["scale"]["domain"] == ["constant, 0", "cosine, 1"] and len({json.dumps(d) for d in dash["scale"]["range"]}) == 2
    width = encodings(spec, "strokeWidth")[0]
    assert width["field"] == "split" and width["title"] == "split (line width)" and width["scale"]["range"] == [1.0, 2.6]  # train thin
    # The two runs of one rate share a colour and differ in dash.
    lines = curves.points.drop_duplicates("line").set_index("label")
    assert lines.at["scratch lr=0.003 constant", "color"] == lines.at["scratch lr=0.003 cosine", "color"]
    assert lines.at["scratch lr=0.003 constant", "variant"] != lines.at["scratch lr=0.003 cosine", "variant"]
    assert fields(spec) <= KNOWN_FIELDS
    vlc.vegalite_to_vega(json.dumps(chart.to_dict()), vl_version=report.VL_VERSION)
    # Without a second param (one schedule), the dash is train/validation again.
    constant = runs[runs["schedule"] == "constant"]
    assert encodings(spec_of(curves_chart(constant, history, curve_data.CurveOptions())[1]), "strokeDash")[0]["field"] == "split"


def test_each_curve_has_its_rate_and_best_value_written_at_its_best_point(lab):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    curves, chart = curves_chart(training, history, curve_data.CurveOptions())
    spec = spec_of(chart)
    texts = [layer for layer in spec["spec"]["layer"] if layer["mark"]["type"] == "text"]
    assert [t["encoding"]["text"]["field"] for t in texts] == ["note"]
    assert texts[0]["transform"][0]["filter"] == {"field": "best", "equal": True}
    data, per_line = charts.compact(curves, 0.0, size=(260, charts.HEIGHT))
    notes = per_line.set_index("line")["note"]
    best = data[data["best"]].merge(per_line, on="line")
    head = best[best["facet"] == "head"].sort_values("value", ascending=False).iloc[0]  # the best head run: labelled
    assert notes[head["line"]] == f"{head['lr_label']}  {head['value']:.3f}"  # "1e-3  0.812"
    # Where a column compares schedules, a label names its schedule too.
    full = best[(best["facet"] == "full") & (best["note"] != "")]
    assert {note.split()[1] for note in full["note"]} & {"constant", "cosine", "step", "exponential"}
    # One label per rate and schedule in a column (repeats share it), at most LABELS_PER_FACET.
    assert (best[best["note"] != ""].groupby("facet").size() <= labels.LABELS_PER_FACET).all()
    assert len(best[best["note"] != ""]) >= 8


def label_boxes_of(chart_spec: dict, data: pd.DataFrame, per_line: pd.DataFrame):
    """Per column: the labels' pixel boxes and the best points' pixels, from the chart's own data,
    size and y domain (the browser's mapping: its x range is each column's epochs, unrounded)."""
    inner = chart_spec.get("spec", chart_spec)
    width, height = inner["width"], inner["height"]
    y_scale = next(layer["encoding"]["y"]["scale"] for layer in inner["layer"] if "y" in layer.get("encoding", {}) and "scale" in layer["encoding"]["y"])
    domain, log_y = y_scale["domain"], y_scale.get("type") == "log"
    points = data.merge(per_line[["line", "facet"]], on="line")
    drawn = points[points["role"].isin(["run", "mean"])]
    found = {}
    for facet, part in drawn.groupby("facet"):
        x_range = (part["epoch"].min(), part["epoch"].max())
        notes = per_line[(per_line["facet"] == facet) & (per_line["note"] != "")]
        boxes = labels.boxes(notes, width=width, height=height, x_range=x_range, domain=domain, log_y=log_y)
        best = part[part["best"]]
        scale = np.log10 if log_y else np.asarray
        ys = height - (scale(best["value"].to_numpy(float)) - scale(domain[0])) / (scale(domain[1]) - scale(domain[0])) * height
        xs = (best["epoch"].to_numpy(float) - x_range[0]) / ((x_range[1] - x_range[0]) or 1) * width
        found[facet] = (boxes, list(zip(xs, ys, strict=True)), width, height)
    return found


@pytest.mark.parametrize("options", [curve_data.CurveOptions(), curve_data.CurveOptions(group=True), curve_data.CurveOptions(metric=contract.LOSS, log_y=True)])
def test_no_label_overlaps_another_or_covers_a_best_point(lab, options):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    curves, chart = curves_chart(training, history, options)
    spec = spec_of(chart)
    inner = spec["spec"]
    data, per_line = charts.compact(curves, 0.0, lower_is_better=options.metric == contract.LOSS, log_y=options.log_y, size=(inner["width"], inner["height"]),
                                    domain=next(layer["encoding"]["y"]["scale"]["domain"] for layer in inner["layer"] if "scale" in layer.get("encoding", {}).get("y", {})))  # fmt: skip
    placed = 0
    for facet, (boxes, points, width, height) in label_boxes_of(spec, data, per_line).items():
        placed += len(boxes)
        for i, a in enumerate(boxes):
            assert 0 <= a[0] and a[2] <= width + 1e-6 and 0 <= a[1] and a[3] <= height + 1e-6, (facet, a)
            for b in boxes[i + 1 :]:
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (facet, a, b)
            for x, y in points:
                assert not (a[0] < x < a[2] and a[1] < y < a[3]), (facet, a, (x, y))
    assert placed >= 6


def test_a_label_takes_the_spot_no_other_curve_crosses():
    """A's best (0.81 from epoch 3 on) would be labelled right above its point, where curve B (0.82)
    runs through the text; the spot right below is free of every curve, so the label goes there."""
    rows = [{"line": "A", "split": "validation", "epoch": e, "value": 0.75 if e < 3 else 0.81, "best": e == 6} for e in range(11)]
    rows += [{"line": "B", "split": "validation", "epoch": e, "value": 0.82, "best": False} for e in range(11)]
    points = pd.DataFrame(rows).assign(role="run", facet="f", variant="", lr_label="1e-3", color="1e-3")
    (note,) = labels.place(points, lower_is_better=False, log_y=False, width=400, height=200, domain=[0.7, 0.9]).itertuples()
    assert note.note_y < 0.81 and note.note_x > 6  # below the point and right of it: neither curve runs through it
    ((left, top, right, bottom),) = labels.boxes(pd.DataFrame([note._asdict()]), width=400, height=200, x_range=(0, 10), domain=[0.7, 0.9])
    for value in (0.81, 0.82):  # A's plateau and B, in pixels
        assert not top <= 200 - (value - 0.7) / 0.2 * 200 <= bottom


def test_the_accuracy_chart_draws_a_dashed_chance_line(lab):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    built = views.build(training, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    assert built.chance == pytest.approx(1 / 6)
    spec = spec_of(built.curves_chart)
    rules = [layer for layer in spec["spec"]["layer"] if layer["mark"].get("type") == "rule" and layer["encoding"].get("y", {}).get("field") == "rule_y"]
    assert len(rules) == 1 and rules[0]["mark"]["strokeDash"]
    loss = views.build(training, history, curve_data.CurveOptions(metric=contract.LOSS), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    assert '"rule_y"' not in json.dumps(spec_of(loss.curves_chart))


def test_a_continued_runs_best_epoch_reads_as_in_the_table(lab):
    """Joined, a fine-tuning run's x is its epoch on the joined curve; its best point also carries
    the epoch of its own run, the table's `best epoch`, and the tooltip shows both."""
    runs, history = lab
    finetune = runs[runs["stage"] == "finetune"].iloc[[0]]
    curves, chart = curves_chart(finetune, history, curve_data.CurveOptions(join=True), all_runs=runs)
    best = curves.points[curves.points["best"] & (curves.points["run_id"] == finetune["run_id"].iloc[0])].iloc[0]
    table = frames.summary(finetune, history, now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    assert best["run_epoch"] == table["best_epoch"].iloc[0] and best["epoch"] > best["run_epoch"]
    tooltip = {t["field"]: t["title"] for t in encodings(spec_of(chart), "tooltip")[0]}
    assert tooltip["run_epoch"] == "epoch of its run" and tooltip["epoch"] == "epoch of the joined curve"
    data, _ = charts.compact(curves, 0.0)  # what the browser gets: the last part's best point with its run's own epoch
    assert data.loc[data["best"], "run_epoch"].tolist() == table["best_epoch"].tolist()


def test_the_curve_chart_fills_the_page_width(lab):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    for facet in (contract.PARAM_STAGE, frames.NO_FACET):
        _, chart = curves_chart(training, history, curve_data.CurveOptions(facet=facet))
        spec = spec_of(chart)
        columns = len(set(training["stage"])) if facet else 1
        width = (spec["spec"]["width"] if facet else spec["width"]) + charts.Y_AXIS_WIDTH
        assert charts.FULL_WIDTH - 120 <= width * columns <= charts.FULL_WIDTH
    # Six columns (stages, joined chains, schedules...) still fit the page.
    six = training.assign(params=[{**p, "stage": f"stage {i % 6}"} for i, p in enumerate(training["params"])], stage=[f"stage {i % 6}" for i in range(len(training))])
    curves, chart = curves_chart(six, history, curve_data.CurveOptions())
    columns = curves.points["facet"].nunique()
    assert columns == 6 and (spec_of(chart)["spec"]["width"] + charts.Y_AXIS_WIDTH) * columns <= charts.FULL_WIDTH


def test_a_large_dataset_goes_to_the_page_as_a_data_url_vega_loads_itself():
    """The curve chart's thousands of points travel as a data: URL (loaded asynchronously, so the
    forest plot above draws first); a small chart's rows stay inline. The rows are the same."""
    from app.charts import spec

    def chart_of(rows: int):
        frame = pd.DataFrame({"epoch": range(rows), "value": [0.5 + i / 10_000 for i in range(rows)]})
        return alt.Chart(frame).mark_line().encode(x="epoch:Q", y="value:Q")

    large, small = spec.page_spec(chart_of(spec.DEFERRED_ROWS + 1)), spec.page_spec(chart_of(10))
    data = large["vconcat"][0]["data"]
    assert "values" not in data and data["url"].startswith("data:application/json;base64,") and data["format"] == {"type": "json", "parse": None}
    assert spec.data_url_rows(data["url"]) == chart_of(spec.DEFERRED_ROWS + 1).to_dict()["datasets"].popitem()[1]
    assert "url" not in small["vconcat"][0]["data"] and len(small["vconcat"][0]["data"]["values"]) == 10
