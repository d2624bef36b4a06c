"""The page's first render: a new session is served from the caches every session shares (no
request to the store), a reload reads only what changed, and the dashboard never loads TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app import synthetic
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import REPO, chart_data, mlflow_server, server_requests
from train import contract

PAGE = str(REPO / "app" / "dashboard.py")
HISTORY_CALLS = ("/metrics/get-history",)  # the bulk and bulk-interval endpoints


def session(monkeypatch, uri: str, experiment: str) -> AppTest:
    """A new browser session: a fresh AppTest of the page (Streamlit's caches are per process)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    page = AppTest.from_file(PAGE, default_timeout=60)
    page.query_params["exp"] = experiment
    page.run()
    assert not page.exception and not page.error, [e.value for e in (*page.exception, *page.error)]
    return page


def built(page: AppTest) -> str:
    """The sidebar's note on when and how the page's charts and table were built."""
    notes = [c.value for c in page.sidebar.caption if "built at" in c.value]
    assert len(notes) == 1, notes
    return notes[0].split(" This page took")[0]


def history_calls(requests: list[str]) -> list[str]:
    return [r for r in requests if any(call in r for call in HISTORY_CALLS)]


def test_a_new_session_asks_the_store_nothing_and_a_reload_reads_only_what_changed(make_store, tmp_path, monkeypatch):
    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("cache")
    for lr in (1e-2, 1e-3, 1e-4):
        synthetic.log_run(client, experiment_id, name=f"full lr={lr:g}", params=synthetic.params_for(lr, "full"), values=synthetic.history(lr, "full", 8))
    with mlflow_server(uri, workdir=tmp_path) as served:
        first = session(monkeypatch, served, "cache")
        after_first = server_requests(served, tmp_path)
        assert history_calls(after_first), after_first  # the first session read the histories over HTTP

        second = session(monkeypatch, served, "cache")
        assert server_requests(served, tmp_path) == after_first  # not one request: runs, histories and charts are shared
        assert chart_data(second.get("vega_lite_chart")[0]).equals(chart_data(first.get("vega_lite_chart")[0]))
        assert built(second) == built(first)  # the very charts and table the first session built (and its load)
        assert "3 run(s) read whole" in built(first)
        assert len(second.dataframe[0].value) == 3

        second.sidebar.button[0].click().run()  # "Reload runs": the run search again, nothing new in it
        after_reload = server_requests(served, tmp_path)
        new = after_reload[len(after_first) :]
        assert any("/runs/search" in r for r in new) and not history_calls(new), new

        late = synthetic.log_run(client, experiment_id, name="full lr=1e-05", params=synthetic.params_for(1e-5, "full"), values=synthetic.history(1e-5, "full", 8))
        second.sidebar.button[0].click().run()
        assert not second.exception and not second.error
        new = server_requests(served, tmp_path)[len(after_reload) :]
        assert history_calls(new), new  # the new run's history, and only over the new run
        assert all(f"run_id={late}" in r for r in history_calls(new)), history_calls(new)
        assert len(second.dataframe[0].value) == 4
        assert "1e-05" in set(chart_data(second.get("vega_lite_chart")[0])["lr_label"].dropna())


def test_the_dashboard_never_loads_tensorflow(lab_store, tmp_path):
    """Every view of the page, in a fresh process, against a tracking server: no TensorFlow or
    Keras, and not MLflow's SQL store either (a second of start-up a client over HTTP never needs)."""
    script = f"""
import sys
from streamlit.testing.v1 import AppTest
page = AppTest.from_file({PAGE!r}, default_timeout=120)
page.query_params["exp"] = {contract.DEFAULT_EXPERIMENT!r}
page.run()
assert not page.exception and not page.error, [e.value for e in (*page.exception, *page.error)]
for view in ("LR sensitivity", "Schedules", "LR finder", "Groups", "Export", "Runs"):
    page.radio(key="view").set_value(view).run()
    assert not page.exception, view
assert page.get("vega_lite_chart")
print("LOADED", sorted(m for m in ("tensorflow", "keras", "tf_keras", "torch", "mlflow.store.tracking.sqlalchemy_store") if m in sys.modules))
"""
    with mlflow_server(lab_store["uri"], workdir=tmp_path) as served:
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300, env={**_env(), "MLFLOW_TRACKING_URI": served})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED []" in done.stdout, done.stdout[-2000:]


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")}


def test_many_runs_draw_the_best_first_and_list_every_one(lab_store, monkeypatch):
    top = 5
    monkeypatch.setenv("MLFLOW_TRACKING_URI", lab_store["uri"])
    page = AppTest.from_file(PAGE, default_timeout=60)
    page.query_params.update({"exp": contract.DEFAULT_EXPERIMENT, "top": str(top)})
    page.run()
    assert not page.exception and not page.error
    table = page.dataframe[0].value
    data = chart_data(page.get("vega_lite_chart")[0])
    drawn = sorted(data["label"].dropna())  # one row per drawn line carries its run's name
    assert len(table) == 25 and len(drawn) == top
    assert drawn == sorted(table.sort_values("best_val_accuracy", ascending=False)["run"].head(top))
    assert any(f"Drawing the {top} runs" in caption.value for caption in page.caption)


def test_warm_up_fills_the_shared_cache_so_the_first_session_reads_no_history(make_store, tmp_path, monkeypatch):
    """What `streamlit run app/serve.py` does as the server starts: afterwards, the first session
    of the page asks the server for the run list only."""
    from app import queries, warmup

    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(contract.DEFAULT_EXPERIMENT)
    client.create_experiment("newer, not opened by default")
    for lr in (1e-2, 1e-3):
        synthetic.log_run(client, experiment_id, name=f"full lr={lr:g}", params=synthetic.params_for(lr, "full"), values=synthetic.history(lr, "full", 6))
    with mlflow_server(uri, workdir=tmp_path) as served:
        summary = warmup.warm_up(served)
        assert summary["experiments"] == [contract.DEFAULT_EXPERIMENT] and summary["runs"] == 2
        assert len(queries.shared_history_cache(queries.store_key(served)).entries) == 2
        before = server_requests(served, tmp_path)
        page = session(monkeypatch, served, contract.DEFAULT_EXPERIMENT)
        assert not history_calls(server_requests(served, tmp_path)[len(before) :])
        assert "0 run(s) read whole" in built(page) and "2 from cache" in built(page)


def test_warm_up_of_a_store_that_is_down_leaves_it_to_the_page(monkeypatch):
    from app import warmup
    from tests.app_fixtures import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert warmup.warm_up(f"http://127.0.0.1:{free_port()}")["runs"] == 0  # no exception: a warning in the log
