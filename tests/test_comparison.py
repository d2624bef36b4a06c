"""A store where the answer is known, logged through `MlflowClient.log_batch`: one clearly worse
group, one within noise of the best, a pair of single runs, and runs with NaN or no metrics. The
verdicts must be right in the table, on the page (AppTest) and in the report's comparison.csv."""

from __future__ import annotations

import io
import math
import shutil
import time
import zipfile

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app import report
from app.analysis import curve_data, frames, stats
from app.data import synthetic
from app.page import views
from sweep import progress
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import REPO, chart_data, load
from train import contract

EXPERIMENT = "verdicts"
PAGE = str(REPO / "app" / "dashboard.py")
# (stage, lr): best validation accuracy of each seed. Known answer per stage: head 1e-3 best,
# 1e-4 worse (by 0.100), 1e-5 within noise; full: one run each, cannot tell.
GROUPS = {
    ("head", 1e-3): [0.80, 0.81, 0.79],
    ("head", 1e-4): [0.70, 0.71, 0.69],
    ("head", 1e-5): [0.79, 0.80, 0.81, 0.78],
    ("full", 1e-3): [0.90],
    ("full", 1e-4): [0.80],
}
EXPECTED = {("head", 1e-3): "best", ("head", 1e-4): "worse", ("head", 1e-5): "within_noise", ("full", 1e-3): "best", ("full", 1e-4): "cannot_tell"}


def curve(best: float) -> dict[str, list[float]]:
    """Three epochs whose best validation accuracy is `best` (at epoch 1)."""
    val = [best - 0.2, best, best - 0.01]
    return {contract.ACCURACY: [v + 0.02 for v in val], contract.VAL_ACCURACY: val, contract.LOSS: [1.0, 0.6, 0.5], contract.VAL_LOSS: [1.1 - v for v in val]}


def fill(client: MlflowClient, experiment_id: str, tags: dict[str, str] | None = None) -> None:
    """The known-answer runs, and two finished runs without a value (NaN metrics; no metrics)."""
    for (stage, lr), values in GROUPS.items():
        for seed, best in enumerate(values):
            # Repeats trained on different machines: the `device` param differs, the group must not.
            params = {**synthetic.params_for(lr, stage, seed=seed, epochs=3), "device": "CPU" if seed % 2 else "GPU 0 (NVIDIA H200)"}
            synthetic.log_run(client, experiment_id, name=f"{stage} lr={lr:g}", params=params, values=curve(best), tags=tags)
    nan = {key: [math.nan] * 3 for key in curve(0.5)}
    synthetic.log_run(client, experiment_id, name="head lr=0.01 nan", params=synthetic.params_for(1e-2, "head", seed=0, epochs=3), values=nan, summary=False, tags=tags)
    synthetic.log_run(client, experiment_id, name="head lr=0.03 no metrics", params=synthetic.params_for(3e-2, "head", seed=0, epochs=3), values={}, tags=tags)


@pytest.fixture(scope="module")
def verdict_store(store_template, tmp_path_factory):
    path = tmp_path_factory.mktemp("verdicts") / "mlflow.db"
    shutil.copy(store_template, path)
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri)
    fill(client, client.create_experiment(EXPERIMENT))
    return uri


def verdicts(table: pd.DataFrame) -> dict[tuple[str, float], str]:
    return {(row["stage"], float(row["lr"])): row["verdict"] for _, row in table.iterrows()}


def test_the_table_has_the_known_verdicts_and_notes_the_runs_without_values(verdict_store):
    _, runs, history = load(verdict_store, EXPERIMENT)
    built = views.build(runs, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    comparison = built.comparison()
    assert verdicts(comparison.table) == EXPECTED
    assert comparison.table.set_index(["stage", "lr"])["n"].to_dict() == {key: len(values) for key, values in GROUPS.items()}
    assert comparison.notes == ["2 finished run(s) have no best validation accuracy (not logged, or NaN) and are left out of the comparison."]
    worse = comparison.table[comparison.table["lr"] == 1e-4].set_index("stage").loc["head"]
    assert worse["difference"] == pytest.approx(0.10)
    loss = built.comparison(stats.LOWEST_VAL_LOSS.name)  # val_loss = 1.1 - val_accuracy: the same ranking, lower is better
    assert verdicts(loss.table) == EXPECTED


def open_page(monkeypatch, uri: str, query: dict) -> AppTest:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    page = AppTest.from_file(PAGE, default_timeout=60)
    page.query_params.update(query)
    return page.run()


def shown(page: AppTest) -> list[str]:
    """The page's Markdown and captions as read (Markdown escapes dropped)."""
    return [e.value.replace("\\", "") for e in (*page.markdown, *page.caption)]


def test_the_page_answers_in_words_and_lists_the_verdicts(verdict_store, monkeypatch):
    page = open_page(monkeypatch, verdict_store, {"exp": EXPERIMENT})
    assert not page.exception and not page.error, [e.value for e in (*page.exception, *page.error)]
    text = "\n".join(shown(page))
    assert "full: one run each: cannot tell; add `-P repeats=3` to the sweep" in text
    assert "head: lr 1e-3 is best, 0.800 [0.775, 0.825] over 3 seeds" in text
    assert "lr 1e-4 is worse by 0.100 [0.077, 0.123]" in text and "lr 1e-5 is undecided, within noise of it: " in text
    assert "2 finished run(s) have no best validation accuracy" in text
    page.radio(key="view").set_value("Groups").run()
    table = page.dataframe[0].value
    assert verdicts(table.assign(lr=table["lr"].astype(float), verdict=table["verdict"].str.replace(" ", "_"))) == EXPECTED  # the page says "within noise"
    page.radio(key="view").set_value("LR sensitivity").run()
    data = chart_data(page.get("vega_lite_chart")[-1])
    head = data[(data["measure"] == "best_val_accuracy") & (data["stage"] == "head") & (data["lr"] == 1e-3)].iloc[0]
    assert (head["ci_low"], head["ci_high"], head["n_label"]) == (pytest.approx(0.80 - 0.0248414, abs=1e-6), pytest.approx(0.80 + 0.0248414, abs=1e-6), "n=3")
    page.radio(key="sband").set_value(frames.MINMAX).run()
    assert not page.exception and page.query_params["sband"] in (frames.MINMAX, [frames.MINMAX])
    page.sidebar.selectbox(key="stat").set_value(stats.LOWEST_VAL_LOSS.name).run()
    assert any(line.startswith("Lowest validation loss per configuration") for line in shown(page))
    page.radio(key="view").set_value("Export").run()
    assert "Comparison: groups and verdicts (CSV)" in [button.proto.label for button in page.get("download_button")]


def test_the_one_click_report_carries_the_verdicts(verdict_store):
    _, runs, history = load(verdict_store, EXPERIMENT)
    built = views.build(runs, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    archive = zipfile.ZipFile(io.BytesIO(report.report_zip("Study", built.figures(), built.summary, {}, built.comparison())))
    assert verdicts(pd.read_csv(archive.open("data/comparison.csv"))) == EXPECTED
    assert "lr 1e-4 is worse by 0.100" in archive.read("report.md").decode().replace("\\", "")
    page = report.report_html("Study", built.figures(), built.summary, {}, built.comparison())
    assert "full: one run each: cannot tell" in page and "<h2>Is the difference real?</h2>" in page


def test_stages_csv_and_the_headline_on_the_known_answer(verdict_store):
    """full's best (lr 1e-3, 0.90) is one run, head's (lr 1e-3) three: full is highest, head cannot be told from it."""
    _, runs, history = load(verdict_store, EXPERIMENT)
    built = views.build(runs, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    files = report.report_files("Study", [], built.summary, {}, built.comparison())
    across = pd.read_csv(io.BytesIO(files["data/stages.csv"]))
    rows = across[["stage", "group", "n", "verdict"]].to_dict("records")
    assert rows == [{"stage": "full", "group": "lr 1e-3", "n": 1, "verdict": "best"}, {"stage": "head", "group": "lr 1e-3", "n": 3, "verdict": "cannot_tell"}]
    assert across["mean"].tolist() == pytest.approx([0.90, 0.80]) and across["difference"].iloc[1] == pytest.approx(0.10)
    assert across["test_accuracy"].isna().all()  # no run was evaluated on a test split
    headline = stats.headline(stats.stages(built.comparison()))
    assert headline[0] == "full lr 1e-3 wins overall, 0.900 (one run); head: cannot tell (one run; add `-P repeats=3` to the sweep)"
    assert headline[1] == stats.SELECTION_LIMITS


def test_the_report_writes_comparison_csv_with_the_verdicts(verdict_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", verdict_store)
    out = tmp_path / "report"
    assert report.main(["--experiment", EXPERIMENT, "--out", str(out)]) == 0
    table = pd.read_csv(out / "data" / "comparison.csv")
    required = ["stage", "model", "lr", "n", "mean", "std", "ci_low", "ci_high", "verdict", "difference", "difference_low", "difference_high"]
    assert set(required) <= set(table.columns)
    assert verdicts(table) == EXPECTED
    assert "epochs" not in table.columns  # a param equal in every group is no column
    said = capsys.readouterr().out
    assert "lr 1e-4 is worse by 0.100 [0.077, 0.123]" in said
    markdown = (out / "report.md").read_text().replace("\\", "")
    assert "## Is the difference real?" in markdown and "head: lr 1e-3 is best, 0.800 [0.775, 0.825] over 3 seeds" in markdown
    assert "head: lr 1e-3 is best, 0.800 [0.775, 0.825] over 3 seeds" in (out / "report.html").read_text()


def test_the_sweep_closing_summary_ranks_with_verdicts_and_warns_on_the_runner_up(tracking_uri, capsys):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("a sweep")
    study = "known-answer"
    fill(client, experiment_id, tags={contract.TAG_SWEEP_STUDY: study})
    fill(client, experiment_id, tags={contract.TAG_SWEEP_STUDY: "another sweep"})  # not this sweep's: left out
    with mlflow.start_run(experiment_id=experiment_id, tags={contract.TAG_KIND: contract.KIND_SWEEP, contract.TAG_SWEEP_STUDY: study}):
        progress.print_ranking(study, [experiment_id])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sweep ranking by best validation accuracy")
    rows = [line.split() for line in out[1:6]]
    assert [(row[0], row[2], row[3]) for row in rows] == [("full", "1e-3", "n=1"), ("full", "1e-4", "n=1"), ("head", "1e-3", "n=3"), ("head", "1e-5", "n=4"), ("head", "1e-4", "n=3")]
    assert [line.rsplit("  ", 1)[-1].split(":")[0] for line in out[1:6]] == ["best", "cannot_tell", "best", "within_noise", "worse"]
    assert "worse: 0.1000 lower [0.0773, 0.1227]" in out[5]
    assert "sweep: head: the winner (lr 1e-3) is within noise of the runner-up (lr 1e-5); do not pick between them on this evidence." in out
    assert any(line.startswith("sweep: full: the winner (lr 1e-3) cannot be told from the runner-up (lr 1e-4)") for line in out)
    assert "sweep: 2 finished run(s) have no best validation accuracy (not logged, or NaN) and are left out of the comparison." in out


def test_sensitivity_bars_are_the_interval_or_the_range_with_n_beside_each_point(verdict_store):
    _, runs, history = load(verdict_store, EXPERIMENT)
    built = views.build(runs, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")

    def layers(chart):
        panel = chart.to_dict()["hconcat"][0]["layer"]
        return {layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]: layer["encoding"] for layer in panel}

    interval, spread = layers(built.sensitivity_chart), layers(built.sensitivity_minmax_chart)
    assert (interval["rule"]["y"]["field"], interval["rule"]["y2"]["field"]) == ("ci_low", "ci_high")
    assert (spread["rule"]["y"]["field"], spread["rule"]["y2"]["field"]) == ("min", "max")
    assert interval["text"]["text"]["field"] == "n_label"
    head = built.sensitivity[(built.sensitivity["stage"] == "head") & (built.sensitivity["measure"] == "best_val_accuracy")]
    assert dict(zip(head["lr"], head["n_label"], strict=True)) == {1e-5: "n=4", 1e-4: "n=3", 1e-3: "n=3"}  # the NaN and empty runs: no point


def test_stages_carry_the_test_accuracy_the_evaluation_logged_on_the_training_run(make_store):
    """`test_accuracy` on a training run (the held-out test/ split) reaches stages.csv beside the validation numbers."""
    uri = make_store()
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    fill(client, experiment_id)
    best_head = client.search_runs([experiment_id], "attributes.run_name = 'head lr=0.001'", max_results=1)[0]
    client.log_metric(best_head.info.run_id, contract.TEST_ACCURACY, 0.775)
    _, runs, history = load(uri, EXPERIMENT)
    built = views.build(runs, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    across = stats.stages(built.comparison()).set_index("stage")
    assert across.loc["head", "test_accuracy"] == pytest.approx(0.775) and math.isnan(across.loc["full", "test_accuracy"])
