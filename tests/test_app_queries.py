"""The dashboard's data access on real stores: SQLite directly and a real `mlflow server`."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app.analysis import curve_data, frames
from app.data import histories, history_cache, run_search, store, synthetic
from app.data import histories as history_module
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import EDGE_EXPERIMENT, REPO, free_port, load, mlflow_server
from train import contract
from train.tracking import mlflow_private


def training_runs(runs):
    """Run ids of training runs: the lab's lr_find run has no epoch curves, and rows with equal start times come in any order."""
    return list(runs.loc[runs["kind"] == contract.KIND_TRAIN, "run_id"])


def test_runs_frame_has_the_contract_columns(lab_store):
    _, runs, _ = load(lab_store["uri"])
    assert len(runs) == sum(len(v) for v in lab_store["lab"].values())
    row = runs[(runs["stage"] == "full") & (runs["kind"] == contract.KIND_TRAIN)].iloc[0]  # not the lab's lr_find run (full, 1e-7)
    assert row["lr"] == float(row["params"][contract.PARAM_LR])
    assert row["lr_label"] == run_search.format_lr(row["lr"]) and row["lr_label"] in {"1e-3", "1e-4", "1e-5"}
    assert set(runs["kind"]) == {contract.KIND_TRAIN, contract.KIND_LR_FIND}
    finetune = runs[runs["stage"] == "finetune"]
    assert set(finetune["init_run_id"]) <= set(runs["run_id"]) and all(finetune["init_run_id"])


def test_format_lr_gives_one_spelling_per_rate():
    assert run_search.format_lr(float("1e-5")) == run_search.format_lr(float("0.00001")) == "1e-5"


def test_bulk_sql_history_equals_the_per_run_history(lab_store):
    client, runs, history = load(lab_store["uri"])
    some = training_runs(runs)[:3]
    for run_id in some:
        for key in (contract.VAL_ACCURACY, contract.LOSS, contract.LEARNING_RATE):
            expected = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            got = history[(history["run_id"] == run_id) & (history["key"] == key)].sort_values("epoch")
            assert list(zip(got["epoch"], got["value"], strict=True)) == sorted(expected)


def test_history_keys_leave_out_single_value_metrics(lab_store):
    _, runs, _ = load(lab_store["uri"])
    keys = histories.history_keys(runs)
    assert keys[: len(contract.EPOCH_METRICS)] == list(contract.EPOCH_METRICS)
    assert not set(keys) & set(histories.SINGLE_VALUE_METRICS)


def test_cache_reads_finished_runs_once_and_running_runs_from_their_last_step(make_store):
    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("live")
    values = synthetic.history(1e-3, "full", 5)
    finished = synthetic.log_run(client, experiment_id, name="done", params=synthetic.params_for(1e-3, "full"), values=values)
    running = synthetic.log_run(client, experiment_id, name="running", params=synthetic.params_for(1e-3, "full"), values={k: v[:2] for k, v in values.items()}, status="RUNNING")
    cache = history_cache.HistoryCache()
    runs = run_search.search_runs(client, [experiment_id])
    first = cache.load(client, runs)
    assert (cache.last.full, cache.last.cached) == (2, 0)
    assert first[first["run_id"] == running]["step"].max() == 1

    now = int(time.time() * 1000)
    client.log_batch(running, metrics=[Metric(key, series[2], now, 2) for key, series in values.items()])
    runs = run_search.search_runs(client, [experiment_id])
    second = cache.load(client, runs)
    assert (cache.last.cached, cache.last.incremental, cache.last.full) == (1, 1, 0)
    assert second[second["run_id"] == running]["step"].max() == 2
    assert len(second[second["run_id"] == finished]) == len(first[first["run_id"] == finished])
    assert not second.duplicated(["run_id", "key", "step"]).any()

    client.set_terminated(running)
    runs = run_search.search_runs(client, [experiment_id])
    cache.load(client, runs)
    cache.load(client, runs)
    assert (cache.last.cached, cache.last.incremental) == (2, 0)


def test_missing_sqlite_store_is_a_message_and_creates_nothing(tmp_path):
    path = tmp_path / "nothing" / "mlflow.db"
    with pytest.raises(store.StoreError) as caught:
        store.open_client(f"sqlite:///{path}")
    assert caught.value.kind == "missing" and not path.exists()


def test_unreachable_server_fails_fast():
    started = time.monotonic()
    with pytest.raises(store.StoreError) as caught:
        store.open_client(f"http://127.0.0.1:{free_port()}")
    assert caught.value.kind == "unreachable"
    assert "does not answer" in str(caught.value)
    assert time.monotonic() - started < 10


def test_permission_denied_is_explained():
    error = store.explain(MlflowException("no READ on experiment 3", error_code=PERMISSION_DENIED), "http://u:p@host:5000")
    assert error.kind == "auth" and "403" in str(error) and "u:p" not in str(error)


def test_addresses_hide_credentials_and_link_to_the_ui(monkeypatch):
    assert store.display_uri("https://alice:secret@mlflow.example.com:5000") == "https://alice:***@mlflow.example.com:5000"
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    assert store.ui_base_url("http://bob:pw@host:5000/") == "http://host:5000"
    assert store.ui_base_url("sqlite:///mlflow.db") == "http://localhost:5000"
    monkeypatch.setenv("MLFLOW_UI_URL", "https://ui.example.com/")
    assert store.ui_base_url("sqlite:///mlflow.db") == "https://ui.example.com"
    assert store.run_url("https://ui.example.com", "3", "abc") == "https://ui.example.com/#/experiments/3/runs/abc"


@pytest.fixture(scope="module")
def served_lab(lab_store):
    """The lab store behind a real `mlflow server`."""
    with mlflow_server(lab_store["uri"]) as uri:
        yield uri


@pytest.mark.slow  # starts a real mlflow server
def test_rest_loader_matches_the_sql_loader(lab_store, served_lab):
    _, runs, sql_history = load(lab_store["uri"])
    client, rest_runs, rest_history = load(served_lab)
    assert mlflow_private.is_rest_store(mlflow_private.tracking_store(client))  # read over HTTP, not the file
    assert set(rest_runs["run_id"]) == set(runs["run_id"])
    columns = ["run_id", "key", "epoch", "value"]
    pd.testing.assert_frame_equal(
        rest_history[columns].sort_values(columns[:3]).reset_index(drop=True),
        sql_history[columns].sort_values(columns[:3]).reset_index(drop=True),
    )


@pytest.mark.slow  # starts a real mlflow server
def test_rest_loader_reads_from_a_step(served_lab):
    client, runs, _ = load(served_lab)
    some = training_runs(runs)[:2]
    later = histories.fetch_history(client, some, [contract.VAL_ACCURACY], start_step=15)
    assert set(later["step"]) == set(range(15, 20))


@pytest.mark.slow  # starts a real mlflow server
def test_rest_loader_splits_runs_into_batches_the_server_accepts(served_lab, monkeypatch):
    client, runs, history = load(served_lab)
    monkeypatch.setattr(history_module, "BULK_MAX_RUNS", 10)  # the lab's 26 runs in 3 calls per metric
    batched = histories.fetch_history(client, list(runs["run_id"]), [contract.VAL_ACCURACY])
    expected = history[history["key"] == contract.VAL_ACCURACY]
    assert len(batched) == len(expected) and set(batched["run_id"]) == set(expected["run_id"])


def test_edge_experiment_loads(lab_store):
    _, runs, history = load(lab_store["uri"], EDGE_EXPERIMENT)
    assert set(runs["status"]) == {"RUNNING", "FINISHED"}
    assert lab_store["edge"]["deleted"] not in set(runs["run_id"])
    table = frames.summary(runs, history, now_ms=time.time() * 1000, stale_after_s=600, ui_base="http://ui")
    state = dict(zip(table["run_id"], table["state"], strict=True))
    assert state[lab_store["edge"]["stale"]] == "STALE"
    assert state[lab_store["edge"]["running"]] == "RUNNING"


@pytest.mark.slow
def test_basic_auth_server_passes_credentials_and_explains_refusals(make_store, tmp_path, monkeypatch):
    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("secret")
    synthetic.log_run(client, experiment_id, name="full lr=0.001", params=synthetic.params_for(1e-3, "full"), values=synthetic.history(1e-3, "full", 3))
    auth_db = tmp_path / "auth.db"
    config = tmp_path / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{auth_db}\nadmin_username = admin\nadmin_password = not-the-default-1234\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    with mlflow_server(uri, app_name="basic-auth", env={"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret"}, workdir=tmp_path) as served:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(store.StoreError) as caught:
            store.open_client(served)
        assert caught.value.kind == "auth" and "401" in str(caught.value) and "wrong" not in str(caught.value)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", served)
        page = AppTest.from_file(str(REPO / "app" / "dashboard.py"), default_timeout=60).run()
        assert not page.exception and "401" in page.error[0].value
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-default-1234")
        remote = store.open_client(served)
        runs = run_search.search_runs(remote, [experiment_id])
        history = histories.fetch_history(remote, list(runs["run_id"]), [contract.VAL_ACCURACY])
        assert len(history) == 3
    assert Path(auth_db).exists()


def test_predecessors_are_followed_across_experiments_and_deletions(make_store):
    client = MlflowClient(tracking_uri=make_store())
    first, second = client.create_experiment("heads"), client.create_experiment("finetunes")
    values = synthetic.history(1e-3, "head", 3)
    head = synthetic.log_run(client, first, name="head", params=synthetic.params_for(1e-3, "head"), values=values)
    middle = synthetic.log_run(client, second, name="finetune 1", params=synthetic.params_for(1e-5, "finetune"), values=values, tags={contract.TAG_INIT_RUN_ID: head})
    last = synthetic.log_run(client, second, name="finetune 2", params=synthetic.params_for(1e-6, "finetune"), values=values, tags={contract.TAG_INIT_RUN_ID: middle})
    gone = synthetic.log_run(client, second, name="gone", params=synthetic.params_for(1e-3, "head"), values=values)
    orphan = synthetic.log_run(client, second, name="orphan", params=synthetic.params_for(1e-5, "finetune"), values=values, tags={contract.TAG_INIT_RUN_ID: gone})
    client.delete_run(gone)
    known = run_search.search_runs(client, [second])
    selected = known[known["run_id"].isin([last, orphan])]
    ancestors, missing = run_search.predecessors(client, selected, known)
    assert set(ancestors["run_id"]) == {middle, head} and missing == [gone]
    history = frames.tidy_history(histories.fetch_history(client, [last, middle, head], [contract.VAL_ACCURACY]), pd.concat([known, ancestors]))
    curves = curve_data.curves(history, selected[selected["run_id"] == last], curve_data.CurveOptions(join=True), all_runs=pd.concat([known, ancestors]))
    assert set(curves.points["facet"]) == {"head → finetune → finetune"} and curves.points["epoch"].max() == 8
