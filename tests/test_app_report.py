"""Export without a browser: SVG and PNG from vl-convert, CSV of the plotted points, HTML and Markdown reports."""

from __future__ import annotations

import io
import time
import zipfile

import pandas as pd
import pytest

from app import report
from app.analysis import curve_data, stats
from app.page import views
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import ANSWER_EXPERIMENT, ANSWER_WINNER, EDGE_EXPERIMENT, HOSTILE_NAME, load
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


def test_the_report_writes_the_answer_across_stages_and_never_outside_out(answer_store, tmp_path, monkeypatch):
    """The known answer (full at lr 1e-4 wins) in stages.csv and the HTML's headline; a metric named
    like a path writes its figure inside --out; our commands show as code, not backticks."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", answer_store["uri"])
    out = tmp_path / "deep" / "er" / "report"
    assert report.main(["--experiment", ANSWER_EXPERIMENT, "--metric", "x/../../../../escaped", "--margin", "0.02", "--out", str(out)]) == 0
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert written and all(p.is_relative_to(out) for p in written), sorted(map(str, written))
    stages = pd.read_csv(out / "data" / "stages.csv")
    assert list(stages.columns[:13]) == ["stage", "model", "group", "lr", "n", "mean", "ci_low", "ci_high", "verdict", "difference", "difference_low", "difference_high", "test_accuracy"]
    assert (stages["stage"].iloc[0], stages["group"].iloc[0], stages["verdict"].iloc[0]) == (*ANSWER_WINNER, "best")
    assert sorted(stages["stage"]) == ["full", "head", "scratch"] and (stages["n"] == 3).all()
    comparison = pd.read_csv(out / "data" / "comparison.csv")
    assert list(comparison.columns) == ["stage", "model", "lr", "n", "mean", "std", "ci_low", "ci_high", "verdict", "difference", "difference_low",
                                        "difference_high", "seeds_needed", "group", "runs"]  # fmt: skip
    assert len(comparison) == 9 and set(comparison["verdict"]) <= set(stats.VERDICTS)
    page = (out / "report.html").read_text()
    assert f"<b>{ANSWER_WINNER[0]} {ANSWER_WINNER[1]} wins overall, " in page and "What this cannot know" in page
    assert "`" not in page.split("<svg")[0]  # no backticks in the text (figures may quote anything)


def test_what_the_report_counts_is_what_its_table_lists():
    runs = pd.DataFrame({"kind": ["train", "train", "lr_find", "sweep", None]})
    assert report.runs_line(runs, runs.iloc[:2]) == "5 runs: 2 training run(s) in the table; left out: 1 lr_find, 1 sweep (parent), 1 no kind"
    assert report.runs_line(runs.iloc[:2], runs.iloc[:2]) == "2 training run(s)"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--experiment", "no such experiment"], "no experiment named no such experiment in sqlite:"),
        (["--smoothing", "5"], "Invalid value for '--smoothing': must be a number from 0 to below 1 (got 5.0)"),
        (["--smoothing", "nan"], "Invalid value for '--smoothing': must be a number from 0 to below 1 (got nan)"),
        (["--margin", "-0.01"], "Invalid value for '--margin'"),
        (["--filter", "params.stage === 'full'"], "--filter \"params.stage === 'full'\" is not an MLflow search filter"),
        (["--out", "/sys/lrlab-report"], "--out /sys/lrlab-report cannot be made"),
    ],
)
def test_bad_input_is_one_line(lab_store, tmp_path, monkeypatch, capsys, args, says):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", lab_store["uri"])
    assert report.main([*args, *([] if "--out" in args else ["--out", str(tmp_path / "out")])]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and says in error and error.count("\n") == 1, error
    assert not (tmp_path / "out" / "report.html").exists()


def test_missing_experiment_lists_the_experiments_there(lab_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", lab_store["uri"])
    assert report.main(["--experiment", "nope", "--out", str(tmp_path)]) == 2
    assert f"the experiments there: Default, {EDGE_EXPERIMENT}, {contract.DEFAULT_EXPERIMENT}" in capsys.readouterr().err


def test_an_out_that_is_a_file_and_a_store_that_does_not_exist_are_one_line(lab_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", lab_store["uri"])
    (tmp_path / "a file").write_text("keep me")
    assert report.main(["--out", str(tmp_path / "a file")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err and (tmp_path / "a file").read_text() == "keep me"
    missing = tmp_path / "no" / "mlflow.db"
    missing.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    assert report.main(["--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(missing) in error  # says which store is missing
    assert not missing.exists()  # a reader never creates a store


def test_infinite_values_print_as_inf_not_309_digits(built):
    """MLflow's SQL stores keep +inf as 1.7976931348623157e308: the runs table says inf."""
    summary = built.summary.copy()
    summary.loc[summary.index[0], "best_val_accuracy"] = 1.7976931348623157e308
    summary.loc[summary.index[1], "final_val_loss"] = float("-inf")
    table = report.table_for_report(summary)
    assert table["best_val_accuracy"].iloc[0] == "inf" and table["final_val_loss"].iloc[1] == "-inf"
    assert max(len(v) for v in table.to_numpy().ravel()) < 120
