"""The run search behind `mlflow server` read as JSON (`run_search._search_rest`) gives the very frame
MlflowClient's search gives: on a real store with params, tags, awkward metrics, running and deleted
runs, over several experiments, a filter, the run cap, and more than one page (over 1,000 runs)."""

from __future__ import annotations

import math
import sqlite3
import threading
import time

import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app.data import run_search, store
from bench.bench_dashboard import _run_rows
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import EDGE_EXPERIMENT, REPO, fill_edge_cases, mlflow_server, server_requests
from train import contract

MANY = 1_050  # over one page of the search (1,000 runs)


def client_frame(client: MlflowClient, experiment_ids: list[str], filter_string: str = "", max_runs: int = 10_000) -> pd.DataFrame:
    """The frame as it was built before the JSON reader: MlflowClient's search, page by page, into `runs_frame`."""
    runs, token = [], None
    while len(runs) < max_runs:
        page = client.search_runs(experiment_ids, filter_string, ViewType.ACTIVE_ONLY, max_results=min(1000, max_runs - len(runs)), page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    names = {experiment_id: client.get_experiment(experiment_id).name for experiment_id in experiment_ids}
    return run_search.runs_frame(runs, names)


@pytest.fixture(scope="module")
def searched_store(store_template, tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    path = folder / "mlflow.db"
    path.write_bytes(store_template.read_bytes())
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri)
    many = client.create_experiment("many")
    artifacts = client.get_experiment(many).artifact_location
    with sqlite3.connect(path) as db:  # 1,050 runs in bulk, the rows MlflowClient writes (bench/bench_dashboard.py)
        for table, columns, values in _run_rows(range(MANY), 2, int(many), artifacts):
            db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values)
    edge_ids = fill_edge_cases(client)  # running, stale, no metrics, hostile names, a deleted run
    edges = client.get_experiment_by_name(EDGE_EXPERIMENT).experiment_id
    # The values JSON drops or spells differently: NaN, ±inf, 0 at step 0, an empty param, a metric logged twice, a nameless run.
    odd = client.create_run(edges, run_name="odd").info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        odd,
        metrics=[Metric("nan", math.nan, now, 3), Metric("inf", math.inf, now, 1), Metric("neg_inf", -math.inf, now, 1), Metric("zero", 0.0, 0, 0),
                 Metric(contract.VAL_ACCURACY, 0.5, now - 10, 0), Metric(contract.VAL_ACCURACY, 0.75, now + 5, 1)],
        params=[Param("empty", ""), Param(contract.PARAM_LR, "0.00001"), Param(contract.PARAM_STAGE, "full")],
        tags=[RunTag("note", "ünïcode \"quoted\" 'x'"), RunTag(contract.TAG_KIND, contract.KIND_TRAIN)],
    )  # fmt: skip
    client.set_terminated(odd, "FAILED")
    nameless = client.create_run(edges).info.run_id
    client.set_tag(nameless, "mlflow.runName", "")
    with mlflow_server(uri, workdir=folder) as served:
        yield {"remote": store.open_client(served), "local": MlflowClient(tracking_uri=uri), "many": many, "edges": edges, "deleted": edge_ids["deleted"], "odd": odd,
               "served": served, "folder": folder}  # fmt: skip


@pytest.mark.parametrize("which", [["many"], ["edges"], ["edges", "many"]])
def test_json_search_equals_the_client_search(searched_store, which):
    remote, ids = searched_store["remote"], [searched_store[name] for name in which]
    assert run_search.mlflow_private.is_rest_store(run_search.mlflow_private.tracking_store(remote))  # the JSON reader is the one tested
    got = run_search.search_runs(remote, ids)
    pd.testing.assert_frame_equal(got, client_frame(remote, ids))
    # and the same as the SQLite store read directly, through MlflowClient
    pd.testing.assert_frame_equal(got, run_search.search_runs(searched_store["local"], ids))
    assert searched_store["deleted"] not in set(got["run_id"])
    assert len(got) == (MANY if which == ["many"] else len(got))
    assert run_search.runs_version(got) == run_search.runs_version(client_frame(remote, ids))


def test_json_search_reads_the_odd_values_as_mlflow_does(searched_store):
    runs = run_search.search_runs(searched_store["remote"], [searched_store["edges"]]).set_index("run_id")
    odd = runs.loc[searched_store["odd"]]
    assert math.isnan(odd["metrics"]["nan"]) and math.isnan(odd["metrics"]["inf"]) and math.isnan(odd["metrics"]["neg_inf"])
    assert odd["metrics"]["zero"] == 0.0 and odd["metrics"][contract.VAL_ACCURACY] == 0.75
    assert odd["params"]["empty"] == "" and odd["lr_label"] == "1e-5" and odd["status"] == "FAILED"
    assert odd["tags"]["note"] == "ünïcode \"quoted\" 'x'"


def test_json_search_pages_past_a_thousand_runs_and_keeps_the_cap(searched_store):
    remote, many = searched_store["remote"], searched_store["many"]
    assert len(run_search.search_runs(remote, [many])) == MANY
    capped = run_search.search_runs(remote, [many], max_runs=1_010)
    pd.testing.assert_frame_equal(capped, client_frame(remote, [many], max_runs=1_010))
    assert len(capped) == 1_010
    only = f"params.{contract.PARAM_STAGE} = 'full'"
    filtered = run_search.search_runs(remote, [many, searched_store["edges"]], only)
    pd.testing.assert_frame_equal(filtered, client_frame(remote, [many, searched_store["edges"]], only))
    assert set(filtered["stage"]) == {"full"} and searched_store["odd"] in set(filtered["run_id"])


def test_the_first_visitor_waits_for_the_warm_ups_search_instead_of_searching_too(searched_store, monkeypatch):
    """A fresh server's first visitor arrives while the warm-up still searches 1,050 runs: the page
    takes the warm-up's runs; the server is asked for them once, not twice at the same time."""
    from app.page import warmup

    served, folder = searched_store["served"], searched_store["folder"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served)
    monkeypatch.setenv(warmup.ENV_EXPERIMENTS, "many")
    before = len(server_requests(served, folder))
    warming = threading.Thread(target=warmup.warm_up, args=(served,))
    warming.start()
    page = AppTest.from_file(str(REPO / "app" / "dashboard.py"), default_timeout=120)
    page.query_params["exp"] = "many"
    page.run()
    warming.join()
    assert not page.exception and not page.error, [e.value for e in (*page.exception, *page.error)]
    searches = [r for r in server_requests(served, folder)[before:] if "/runs/search" in r]
    assert len(searches) == 2, searches  # one search: 1,050 runs in two pages
    assert page.session_state["_served"]["built_at"].startswith("warm-up")
