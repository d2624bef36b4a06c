"""Hostile and broken input through the real page (`streamlit.testing.v1.AppTest` on real SQLite
stores): URL values out of range and non-finite metrics are notes and blanks, never errors."""

from __future__ import annotations

import json
import re

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app.data import synthetic
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import REPO
from train import contract

PAGE = str(REPO / "app" / "dashboard.py")
LONG_NUMBER = re.compile(r"\d{20,}")  # 1.8e308 written out in full


def open_page(monkeypatch, uri: str, query: dict | None = None) -> AppTest:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    page = AppTest.from_file(PAGE, default_timeout=90)
    page.query_params.update(query or {})
    return page.run()


def shown_text(page: AppTest) -> list[str]:
    return [e.value for e in (*page.warning, *page.caption, *page.markdown, *page.info, *page.error)]


@pytest.fixture(scope="module")
def small_store(store_template, tmp_path_factory):
    """Two stages, two rates, two seeds each: a store the page opens in seconds."""
    import shutil

    path = tmp_path_factory.mktemp("small") / "mlflow.db"
    shutil.copy(store_template, path)
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(contract.DEFAULT_EXPERIMENT)
    for stage in ("scratch", "full"):
        for lr in (1e-3, 1e-4):
            for seed in (1, 2):
                synthetic.log_run(client, experiment_id, name=f"{stage} lr={lr:g}", params=synthetic.params_for(lr, stage, seed=seed, epochs=6), values=synthetic.history(lr, stage, 6, seed))
    return {"uri": uri, "client": client, "experiment_id": experiment_id}


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"every": "0", "live": "1"}, "every"),
        ({"smooth": "nan"}, "smooth"),
        ({"smooth": "-0.5"}, "smooth"),
        ({"top": "-3"}, "top"),
        ({"stale": "-5"}, "stale"),
        ({"every": "-1", "live": "1"}, "every"),
        ({"margin": "-0.2"}, "margin"),
        ({"smooth": "inf"}, "smooth"),
        ({"top": "lots"}, "top"),
    ],
)
def test_a_hostile_url_value_is_a_note_not_an_error(small_store, monkeypatch, query, named):
    page = open_page(monkeypatch, small_store["uri"], query)
    assert not page.exception, [e.value for e in page.exception]
    assert not page.error, [e.value for e in page.error]
    notes = [w.value for w in page.warning if "URL" in w.value]
    assert notes and named in notes[0], shown_text(page)
    assert page.get("vega_lite_chart"), "the page still draws"


def test_infinite_metrics_never_rank_best_nor_print_309_digits_and_the_chart_stays(make_store, monkeypatch):
    """A run whose `best_val_accuracy` is +inf (MLflow keeps ±1.8e308) is no winner, and a run whose
    every validation accuracy is -inf leaves the chart drawn."""
    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(contract.DEFAULT_EXPERIMENT)
    for lr in (1e-3, 1e-4):
        for seed in (1, 2):
            synthetic.log_run(client, experiment_id, name=f"full lr={lr:g}", params=synthetic.params_for(lr, "full", seed=seed, epochs=5), values=synthetic.history(lr, "full", 5, seed))
    broken = synthetic.params_for(1e-2, "full", seed=1, epochs=5)
    values = synthetic.history(1e-2, "full", 5, 1)
    values[contract.VAL_ACCURACY] = [float("-inf")] * 5
    values[contract.ACCURACY] = [float("-inf")] * 5
    run_id = synthetic.log_run(client, experiment_id, name="full lr=0.01 all -inf", params=broken, values=values, summary=False)
    client.log_batch(run_id, metrics=[Metric(contract.BEST_VAL_ACCURACY, float("inf"), 0, 0), Metric(contract.BEST_EPOCH, 0.0, 0, 0)])
    page = open_page(monkeypatch, uri, {"view": "Groups"})
    assert not page.exception, [e.value for e in page.exception]
    assert not page.error, [e.value for e in page.error]
    for text in shown_text(page):
        assert not LONG_NUMBER.search(text), text
    charts = page.get("vega_lite_chart")
    assert charts
    for chart in charts:
        assert not LONG_NUMBER.search(chart.proto.spec), "a 309-digit number reached a chart"
        assert "Infinity" not in chart.proto.spec and "NaN" not in json.dumps(json.loads(chart.proto.spec))
    groups = page.dataframe[0].value
    best = groups[groups["verdict"] == "best"]
    assert list(best["lr"]) != ["1e-2"] and "1e-2" not in set(best["lr"]), groups
    for table in page.dataframe:
        assert not LONG_NUMBER.search(table.value.to_string())


def test_the_page_never_creates_or_migrates_a_store(tmp_path, monkeypatch):
    """A reader: an empty file (a store another process is creating) stays as it is, one line says so."""
    database = tmp_path / "mlflow.db"
    database.touch()
    page = open_page(monkeypatch, f"sqlite:///{database}")
    assert not page.exception, [e.value for e in page.exception]
    assert page.error and "does not exist" in page.error[0].value, [e.value for e in page.error]
    assert database.stat().st_size == 0, "the page migrated the store"
