"""Export without a browser: SVG and PNG from vl-convert, CSV of the plotted points, HTML and Markdown reports."""

from __future__ import annotations

import io
import time
import zipfile

import pandas as pd
import pytest

from app import report
from app.analysis import curve_data
from app.page import views
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import EDGE_EXPERIMENT, HOSTILE_NAME, load
from train import contract


@pytest.fixture(scope="module")
def built(lab_store):
    _, runs, history = load(lab_store["uri"], EDGE_EXPERIMENT)
    return views.build(runs, history, curve_data.CurveOptions(smoothing=0.5), now_ms=time.time() * 1000, stale_after_s=600, ui_base="http://ui")


def test_figures_render_to_svg_and_png(built):
    figure = built.figures()[0]
    assert report.to_svg(figure.chart).startswith("<svg")
    assert report.to_png(figure.chart, scale=1).startswith(b"\x89PNG\r\n\x1a\n")


def test_csv_holds_the_plotted_points_raw_and_smoothed(built):
    figure = built.figures()[0]
    points = pd.read_csv(io.BytesIO(report.to_csv(figure.data)))
    assert {"label", "lr_label", "split", "epoch", "value", "smoothed"} <= set(points.columns)
    assert len(points) == len(built.curves.points)
    assert HOSTILE_NAME in set(points["label"])


def test_html_report_escapes_everything_it_did_not_write(built):
    page = report.report_html("Study <b>", built.figures(), built.summary, {"filters": "<i>none</i>"})
    assert "<script>" not in page and "&lt;script&gt;alert(" in page
    assert "Study &lt;b&gt;" in page and "&lt;i&gt;none&lt;/i&gt;" in page
    assert page.count("<svg") == len(built.figures())


def test_markdown_report_zip_has_figures_data_and_an_escaped_table(built):
    archive = zipfile.ZipFile(io.BytesIO(report.report_zip("Study", built.figures(), built.summary, {"store": "sqlite:///x"})))
    names = set(archive.namelist())
    for figure in built.figures():
        assert {f"figures/{figure.name}.svg", f"figures/{figure.name}.png", f"data/{figure.name}.csv"} <= names
    text = archive.read("report.md").decode()
    assert "<script>" not in text and "\\*\\*bold\\*\\*" in text and "\\[link\\]" in text
    assert "](figures/curves-accuracy.png)" in text


def test_markdown_text_is_literal():
    assert report.markdown_text("a *b* [c](d) <e>\n|f|") == "a \\*b\\* \\[c\\]\\(d\\) &lt;e&gt; \\|f\\|"


def test_report_command_writes_a_report_without_a_browser(lab_store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", lab_store["uri"])
    out = tmp_path / "report"
    assert report.main(["--experiment", contract.DEFAULT_EXPERIMENT, "--smoothing", "0.3", "--out", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "figures" / "curves-accuracy.png").exists() and (out / "data" / "summary.csv").exists()
    assert report.main(["--experiment", "no such experiment", "--out", str(out)]) == 2
