"""The page's first render: a new session is served from the caches every session shares (no
request to the store), a reload reads only what changed, and the dashboard never loads TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app.data import synthetic
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import REPO, chart_data, curve_chart, load, mlflow_server, server_requests
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


def built(page: AppTest) -> dict:
    """How the page's charts and table were built (kept in session state for tests and the benchmark,
    not drawn): when, and what the history load read: runs whole, extended by keys, from cache."""
    served = dict(page.session_state["_served"])
    assert not [c.value for c in page.sidebar.caption if "built at" in c.value or " s)" in c.value], "no timing note for the reader"
    return {key: served[key] for key in ("built_at", "full", "extended", "incremental", "cached")}


def history_calls(requests: list[str]) -> list[str]:
    return [r for r in requests if any(call in r for call in HISTORY_CALLS)]


@pytest.mark.slow  # starts a real mlflow server
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
        assert chart_data(curve_chart(second)).equals(chart_data(curve_chart(first)))
        assert built(second) == built(first)  # the very charts and table the first session built (and its load)
        # The first chart's keys were read first (whole), the other keys of the same runs then.
        assert built(first)["full"] + built(first)["extended"] == 3 and built(first)["cached"] == 0
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
        assert "1e-5" in set(chart_data(curve_chart(second))["lr_label"].dropna())


@pytest.mark.slow  # starts a real mlflow server
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
    page.query_params.update({"exp": contract.DEFAULT_EXPERIMENT, "top": str(top), "group": "0"})  # runs, not their groups
    page.run()
    assert not page.exception and not page.error
    table = page.dataframe[0].value
    data = chart_data(curve_chart(page))
    drawn = sorted(data["label"].dropna())  # one row per drawn line carries its run's name
    assert len(table) == 25 and len(drawn) == top
    assert drawn == sorted(table.sort_values("best_val_accuracy", ascending=False)["run"].head(top))
    assert any(f"Drawing the {top} runs" in caption.value for caption in page.caption)


@pytest.mark.slow  # starts a real mlflow server
def test_warm_up_fills_the_shared_cache_so_the_first_session_reads_no_history(make_store, tmp_path, monkeypatch):
    """What `streamlit run app/serve.py` does as the server starts: afterwards, the first session
    of the page asks the server for the run list only."""
    from app.data import history_cache, store
    from app.page import views, warmup

    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(contract.DEFAULT_EXPERIMENT)
    client.create_experiment("newer, not opened by default")
    for lr in (1e-2, 1e-3):
        synthetic.log_run(client, experiment_id, name=f"full lr={lr:g}", params=synthetic.params_for(lr, "full"), values=synthetic.history(lr, "full", 6))
    with mlflow_server(uri, workdir=tmp_path) as served:
        summary = warmup.warm_up(served)
        assert summary["experiments"] == [contract.DEFAULT_EXPERIMENT] and summary["runs"] == 2
        assert len(history_cache.shared_history_cache(store.store_key(served)).entries) == 2
        before = server_requests(served, tmp_path)
        # The curve chart's histories were read once (one bulk call per key), in a thread while the
        # answer was computed, and the curve chart found them cached.
        assert len(history_calls(before)) == len(views.needed_keys(contract.ACCURACY)), history_calls(before)
        assert 0 < summary["searched_s"] <= summary["answer_s"] <= summary["seconds"]
        page = session(monkeypatch, served, contract.DEFAULT_EXPERIMENT)
        assert not history_calls(server_requests(served, tmp_path)[len(before) :])
        assert built(page)["built_at"].startswith("warm-up")  # the page is the one the warm-up built (and read for)


def test_warm_up_of_a_store_that_is_down_leaves_it_to_the_page(monkeypatch):
    from app.page import warmup
    from tests.app_fixtures import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert warmup.warm_up(f"http://127.0.0.1:{free_port()}")["runs"] == 0  # no exception: a warning in the log


def test_the_first_chart_is_the_chart_the_full_views_draw_from_a_fraction_of_the_reads(lab_store):
    """`app.page.first_chart` reads the chart's keys of the runs it draws only, and builds the very chart
    the full views build from every history, whatever the settings."""
    from app.analysis import curve_data
    from app.data import history_cache
    from app.page import first_chart, views

    client, runs, history = load(lab_store["uri"])
    kwargs = {"now_ms": 1.8e12, "stale_after_s": 600.0, "ui_base": ""}
    for options in (curve_data.CurveOptions(), curve_data.CurveOptions(top=5), curve_data.CurveOptions(metric=contract.LOSS, log_y=True, smoothing=0.5),
                    curve_data.CurveOptions(join=True), curve_data.CurveOptions(group=True, members=True)):  # fmt: skip
        cache = history_cache.HistoryCache()
        quick = first_chart.chart_spec(client, cache, runs, runs, options, **kwargs)
        full = views.build(runs, history, options, all_runs=runs, **kwargs).page_spec("curves")
        assert quick == full, options
        read = {key for entry in cache.entries.values() for key in entry.keys}
        assert read <= set(first_chart.needed_keys(options.metric)), read
        if options.top:  # the drawn runs' curves, and validation accuracy of those without a logged best (to rank them)
            ranked = runs.loc[~runs["metrics"].map(lambda m: contract.BEST_VAL_ACCURACY in m), "run_id"]
            assert len(set(cache.entries) - set(ranked)) <= options.top < len(runs)
        # The full load afterwards reads only the keys the first chart did not.
        cache.load(client, runs)
        assert cache.last.extended == len(cache.entries) - cache.last.full and cache.last.cached == 0


def test_the_history_cache_keeps_a_bounded_number_of_points_the_least_recently_used_go(make_store):
    from app.data import history_cache, run_search, store

    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("bounded")
    ids = [synthetic.log_run(client, experiment_id, name=f"full lr={lr:g}", params=synthetic.params_for(lr, "full"), values=synthetic.history(lr, "full", 5)) for lr in (1e-2, 1e-3, 1e-4, 1e-5)]
    runs = run_search.search_runs(store.open_client(uri), [experiment_id]).set_index("run_id").loc[ids].reset_index()
    per_run = 5 * len(contract.EPOCH_METRICS)
    cache = history_cache.HistoryCache(max_points=3 * per_run)
    cache.load(client, runs.iloc[[0, 1]])
    cache.load(client, runs.iloc[[0]])  # run 0 asked again: run 1 is now the least recently used
    cache.load(client, runs.iloc[[2, 3]])
    assert cache.points <= 3 * per_run and list(cache.entries) == [ids[0], ids[2], ids[3]]
    cache.load(client, runs.iloc[[1]])  # an evicted run is read again, and pushes out the oldest
    assert cache.last.full == 1 and list(cache.entries) == [ids[2], ids[3], ids[1]]
    # A load larger than the bound still returns every run asked for (and keeps them until the next).
    assert cache.load(client, runs)["run_id"].nunique() == 4 and cache.points == 4 * per_run
    assert history_cache.HistoryCache().max_points == history_cache.CACHE_MAX_POINTS
