"""The page through `streamlit.testing.v1.AppTest`: filters change the chart's data, the URL keeps
the selection, and empty, broken and hostile states are messages, never tracebacks."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from app.page import views
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import EDGE_EXPERIMENT, HOSTILE_NAME, REPO, chart_data, chart_spec, curve_chart, free_port
from train import contract

PAGE = str(REPO / "app" / "dashboard.py")


def open_page(monkeypatch, uri: str, query: dict | None = None) -> AppTest:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    page = AppTest.from_file(PAGE, default_timeout=60)
    page.query_params.update(query or {})
    return page.run()


def curves_of(page: AppTest):
    chart = curve_chart(page)
    return chart_data(chart), chart_spec(chart)


def no_failure(page: AppTest) -> None:
    assert not page.exception, [e.value for e in page.exception]
    assert not page.error, [e.value for e in page.error]


def test_default_view_overlays_every_stage(lab_store, monkeypatch):
    page = open_page(monkeypatch, lab_store["uri"])
    no_failure(page)
    data, spec = curves_of(page)
    assert set(data["facet"].dropna()) == set(contract.STAGES)
    assert spec["facet"]["column"]["field"] == "facet"
    assert len(page.dataframe[0].value) == 25  # the lab's training runs; the lr-finder run has its own tab
    assert page.query_params["exp"] in (contract.DEFAULT_EXPERIMENT, [contract.DEFAULT_EXPERIMENT])


def test_filters_change_the_charted_runs_and_land_in_the_url(lab_store, monkeypatch):
    page = open_page(monkeypatch, lab_store["uri"])
    page.sidebar.multiselect(key="stage").set_value(["full"]).run()
    page.sidebar.multiselect(key="lr").set_value(["1e-3"]).run()
    no_failure(page)
    data, _ = curves_of(page)
    assert set(data["facet"].dropna()) == {"full"}
    assert set(data["lr_label"].dropna()) == {"1e-3"}
    assert page.query_params["stage"] in ("full", ["full"]) and page.query_params["lr"] in ("1e-3", ["1e-3"])


@pytest.mark.slow  # every view, the Export figures rendered: ~45 s
def test_every_view_renders(lab_store, monkeypatch):
    page = open_page(monkeypatch, lab_store["uri"], {"group": "1"})
    assert views.GROUP_LABEL_NOTE in [c.value for c in page.caption], "grouped lines say what their labels measure"
    for view in ("LR sensitivity", "Schedules", "LR finder", "Groups", "Export", "Runs"):
        page.radio(key="view").set_value(view).run()
        no_failure(page)
        assert page.query_params.get("view", "Runs") in (view, [view])
    page.radio(key="view").set_value("Export").run()
    assert len(page.download_button) >= 3 * 4 + 3  # SVG, PNG, CSV per chart; summary; two reports


def test_a_shared_url_restores_the_view(lab_store, monkeypatch):
    query = {"exp": contract.DEFAULT_EXPERIMENT, "stage": "head", "metric": "loss", "logy": "1", "smooth": "0.5", "group": "1"}
    page = open_page(monkeypatch, lab_store["uri"], query)
    no_failure(page)
    assert page.sidebar.selectbox(key="metric").value == contract.LOSS
    assert page.sidebar.slider(key="smooth").value == 0.5
    data, spec = curves_of(page)
    assert set(data["facet"].dropna()) == {"head"} and set(data["role"].dropna()) == {"mean"}
    assert '"type": "log"' in json.dumps(spec)


def test_grouping_and_joining_from_the_sidebar(lab_store, monkeypatch):
    page = open_page(monkeypatch, lab_store["uri"])
    page.sidebar.checkbox(key="group").check().run()
    page.sidebar.checkbox(key="members").check().run()
    page.sidebar.checkbox(key="join").check().run()
    no_failure(page)
    data, _ = curves_of(page)
    assert {"mean", "member"} <= set(data["role"].dropna())
    assert "head → finetune" in set(data["facet"].dropna())
    page.radio(key="view").set_value("Groups").run()
    assert not page.dataframe[0].value.empty  # the groups and their member runs


def test_edge_cases_are_messages_and_text(lab_store, monkeypatch):
    page = open_page(monkeypatch, lab_store["uri"], {"exp": EDGE_EXPERIMENT, "join": "1"})
    no_failure(page)
    shown = [e.value for e in (*page.warning, *page.caption, *page.markdown, *page.info)]
    assert any("STALE" in text for text in shown)
    assert any("no metrics yet" in text for text in shown)
    assert any("no validation metrics" in text for text in shown)
    assert any("deleted" in text for text in shown)
    table = page.dataframe[0].value
    assert HOSTILE_NAME in set(table["run"])  # verbatim, as text
    for text in shown:
        assert "<script>" not in text and "](http://example.com)" not in text
    states = dict(zip(table["run"], table["state"], strict=True))
    assert states["full lr=0.0001 stale"] == "STALE" and states["full lr=0.001 running"] == "RUNNING"


def test_an_invalid_mlflow_filter_is_a_message(lab_store, monkeypatch):
    page = open_page(monkeypatch, lab_store["uri"], {"q": "params.lr >>> 'x'"})
    assert not page.exception
    assert "filter was refused" in page.error[0].value


def test_an_empty_store_says_there_are_no_runs(make_store, monkeypatch):
    page = open_page(monkeypatch, make_store())
    no_failure(page)
    assert "No runs" in page.info[0].value


def test_a_missing_store_is_a_message(tmp_path, monkeypatch):
    page = open_page(monkeypatch, f"sqlite:///{tmp_path}/nowhere/mlflow.db")
    assert not page.exception
    assert "does not exist" in page.error[0].value
    assert not (tmp_path / "nowhere").exists(), "a reader creates no store"


def test_a_server_that_is_down_is_a_message(monkeypatch):
    page = open_page(monkeypatch, f"http://127.0.0.1:{free_port()}")
    assert not page.exception
    assert "does not answer" in page.error[0].value


@pytest.mark.parametrize("metric", [contract.LEARNING_RATE, contract.LOSS])
def test_switching_metric_turns_on_the_log_scale(lab_store, monkeypatch, metric):
    page = open_page(monkeypatch, lab_store["uri"])
    page.sidebar.selectbox(key="metric").set_value(metric).run()
    no_failure(page)
    assert page.sidebar.checkbox(key="logy").value is True
    _, spec = curves_of(page)
    assert f'"{metric} (log)"' in json.dumps(spec)


def test_a_sweep_filter_picks_one_sweep_and_its_parent_run_is_no_curve(make_store, monkeypatch):
    """Real sweeps log a parent run (kind=sweep: plan, counts, no per-epoch metrics) beside their
    children; the page offers each sweep as a filter and never draws or lists the parent."""
    from mlflow.tracking import MlflowClient

    from app.data import synthetic

    uri = make_store()
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(contract.DEFAULT_EXPERIMENT)
    for study, rates in (("stages-aaa-e1", (1e-3, 1e-4)), ("stages-bbb-e1", (1e-2,))):
        tags = {contract.TAG_SWEEP_STUDY: study}
        parent = synthetic.log_run(client, experiment_id, name=f"sweep {study}", params={"plan": "stages"}, values={"children_trained": [len(rates)]},
                                   tags={**tags, contract.TAG_KIND: contract.KIND_SWEEP})  # fmt: skip
        for lr in rates:
            synthetic.log_run(client, experiment_id, name=f"stages lr={lr:g}", params=synthetic.params_for(lr, "scratch", seed=1),
                              values=synthetic.history(lr, "scratch", 4, 1), tags=tags, parent_run_id=parent)  # fmt: skip
    page = open_page(monkeypatch, uri)
    no_failure(page)
    assert not [c.value for c in page.caption if "no metrics" in c.value or "no validation" in c.value], "the parent runs are not training runs"
    assert sorted(page.dataframe[0].value["run"]) == ["stages lr=0.0001", "stages lr=0.001", "stages lr=0.01"]
    offered = {widget.key for widget in page.sidebar.multiselect}
    assert "sweep" in offered and not {"model", "data"} & offered, "the parents' empty params are no choice"
    data, _ = curves_of(page)
    assert set(data["lr_label"].dropna()) == {"1e-2", "1e-3", "1e-4"}
    page.sidebar.multiselect(key="sweep").set_value(["stages-aaa-e1"]).run()
    no_failure(page)
    data, _ = curves_of(page)
    assert set(data["lr_label"].dropna()) == {"1e-3", "1e-4"}
    assert len(page.dataframe[0].value) == 2
    assert page.query_params["sweep"] in ("stages-aaa-e1", ["stages-aaa-e1"])


def test_a_store_without_sweeps_says_nothing_about_sweeps(lab_store, monkeypatch):
    page = open_page(monkeypatch, lab_store["uri"])
    no_failure(page)
    assert "sweep" not in {widget.key for widget in page.sidebar.multiselect}
    assert not [c.value for c in page.sidebar.caption if "sweep" in c.value.lower()]


def test_the_runs_table_lists_the_best_first_fits_a_1600_px_page_and_writes_rates_as_the_chart(lab_store, monkeypatch):
    from app.analysis import numbers
    from app.charts import builders as charts

    page = open_page(monkeypatch, lab_store["uri"])
    no_failure(page)
    table = page.dataframe[0]
    best = table.value["best_val_accuracy"].tolist()
    assert best == sorted(best, reverse=True)
    assert set(table.value["lr"]) == {numbers.format_lr(v) for v in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)} and "1e-3" in set(table.value["lr"])
    data, _ = curves_of(page)
    assert set(data["lr_label"].dropna()) <= set(table.value["lr"])  # one spelling in the legend and the table
    config = json.loads(table.proto.columns)
    shown = list(table.proto.column_order)
    assert shown[:2] == ["run", "lr"] and {"best_val_accuracy", "best_epoch", "url"} <= set(shown)
    assert sum(config[name]["width"] for name in shown) <= charts.FULL_WIDTH  # the main area beside the sidebar at 1600 px
    assert "model" not in shown  # the same for every run: nothing to compare
    assert not config["run"].get("pinned"), "a pinned column is drawn grey, as if disabled"


def test_the_sidebar_ends_with_the_settings_not_a_timing_note(lab_store, monkeypatch):
    page = open_page(monkeypatch, lab_store["uri"])
    no_failure(page)
    captions = [c.value for c in page.sidebar.caption]
    assert not [c for c in captions if "built at" in c or "took" in c or " s)" in c], captions
    assert page.session_state["_served"]["page_seconds"] > 0  # kept for the benchmark, never drawn


def test_a_link_with_an_old_spelling_of_a_rate_still_selects_it(lab_store, monkeypatch):
    page = open_page(monkeypatch, lab_store["uri"], {"lr": "0.001", "stage": "head"})
    no_failure(page)
    assert page.sidebar.multiselect(key="lr").value == ["1e-3"]
    data, _ = curves_of(page)
    assert set(data["lr_label"].dropna()) == {"1e-3"}


def test_an_infinite_metric_does_not_flatten_the_chart(make_store, monkeypatch):
    """MLflow stores inf as ±1.8e308: that point is skipped like NaN, the others keep their scale."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from app.data import synthetic

    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(contract.DEFAULT_EXPERIMENT)
    for lr in (1e-3, 1e-4):
        synthetic.log_run(client, experiment_id, name=f"full lr={lr:g}", params=synthetic.params_for(lr, "full"), values=synthetic.history(lr, "full", 6))
    diverged = synthetic.log_run(client, experiment_id, name="full lr=1 diverged", params=synthetic.params_for(1.0, "full"), values=synthetic.history(1.0, "full", 6))
    client.log_batch(diverged, metrics=[Metric(contract.VAL_LOSS, float("inf"), 0, 6), Metric(contract.LOSS, float("-inf"), 0, 6)])
    assert max(abs(m.value) for m in client.get_metric_history(diverged, contract.VAL_LOSS)) > 1e300  # as MLflow keeps it
    page = open_page(monkeypatch, uri, {"metric": "loss"})
    no_failure(page)
    data, _ = curves_of(page)
    values = data["value"].dropna()
    assert len(values) > 0 and values.abs().max() < 100
