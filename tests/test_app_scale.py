"""The page at scale: the answer (verdicts, forest plot, runs table, LR sensitivity) comes from the
run search alone for finished runs of this version; the grouped curves read a bounded sample of
histories; runs without the run-level metrics (running, older versions) still get their summary,
from their own history only. Real SQLite stores in tmp_path, the page through Streamlit's AppTest."""

from __future__ import annotations

import time

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app.analysis import curve_data, frames, stats
from app.data import histories, history_cache, run_search, store, synthetic
from app.page import first_chart, views
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import REPO, chart_data, curve_chart
from train import contract

EXPERIMENT = "scale"
SEEDS = 24  # more than views.GROUP_RUNS_DRAWN: the curves draw a sample of each group
EPOCHS = 6
GRID = [(stage, lr) for stage in ("full", "head") for lr in (1e-2, 1e-3, 1e-4)]
KWARGS = {"now_ms": time.time() * 1000, "stale_after_s": 600.0, "ui_base": ""}


@pytest.fixture(scope="module")
def scale_store(store_template, tmp_path_factory):
    """144 finished runs: 6 configurations x 24 seeds, each logged as training logs it (run-level metrics included)."""
    import shutil

    path = tmp_path_factory.mktemp("scale") / "mlflow.db"
    shutil.copy(store_template, path)
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    for stage, lr in GRID:
        for seed in range(SEEDS):
            synthetic.log_run(client, experiment_id, name=f"{stage} lr={lr:g}", params=synthetic.params_for(lr, stage, seed=seed, epochs=EPOCHS),
                              values=synthetic.history(lr, stage, EPOCHS, seed))  # fmt: skip
    return {"uri": uri, "experiment_id": experiment_id}


def runs_of(uri: str, experiment_id: str):
    client = store.open_client(uri)
    return client, run_search.search_runs(client, [experiment_id])


def test_the_answer_and_the_runs_table_read_no_history(scale_store):
    client, runs = runs_of(scale_store["uri"], scale_store["experiment_id"])
    cache = history_cache.HistoryCache()
    built = first_chart.build_views(client, cache, runs, runs, curve_data.CurveOptions(group=True), **KWARGS)
    summary, comparison = built.summary, built.comparison()
    assert built.forest_spec() is not None and built.page_spec("sensitivity") is not None
    assert len(summary) == len(runs) == len(GRID) * SEEDS
    assert summary[["best_val_accuracy", "best_epoch", "gap", "epochs", "images_per_second", "final_val_loss"]].notna().all().all()
    assert (summary["epochs"] == EPOCHS).all()
    assert comparison.table["n"].tolist() == [SEEDS] * len(GRID)  # the verdicts use every run
    assert built.load_stats.points == 0 and not cache.entries, built.load_stats  # not one history point read
    # The same numbers as from every history (what the page computed before run-level metrics).
    every = frames.tidy_history(histories.fetch_history(client, list(runs["run_id"]), list(contract.EPOCH_METRICS)), runs)
    old_style = runs.assign(metrics=runs["metrics"].map(lambda m: {k: v for k, v in m.items() if k not in contract.SUMMARY_METRICS[2:]}))
    from_history = frames.summary(old_style, every, **KWARGS).set_index("run_id")
    for column in ("best_val_accuracy", "best_epoch", "gap", "epochs", "images_per_second"):
        assert summary.set_index("run_id")[column].to_numpy() == pytest.approx(from_history.loc[summary["run_id"], column].to_numpy()), column


def test_grouped_curves_read_at_most_k_runs_per_group(scale_store):
    client, runs = runs_of(scale_store["uri"], scale_store["experiment_id"])
    cache = history_cache.HistoryCache()
    built = first_chart.build_views(client, cache, runs, runs, curve_data.CurveOptions(group=True), **KWARGS)
    points = built.curves.points
    assert set(points["role"]) == {"mean"} and points["n_runs"].max() == views.GROUP_RUNS_DRAWN
    read = runs[runs["run_id"].isin(cache.entries)]
    per_group = stats.group_keys(read["params"]).value_counts()
    assert len(per_group) == len(GRID) and (per_group == views.GROUP_RUNS_DRAWN).all(), per_group
    assert {key for entry in cache.entries.values() for key in entry.keys} <= set(views.needed_keys(contract.ACCURACY))
    assert built.load_stats.full == len(GRID) * views.GROUP_RUNS_DRAWN
    # The lowest seeds, the same ones every time.
    assert sorted(read["seed"].astype(int).unique()) == list(range(views.GROUP_RUNS_DRAWN))
    sample = built.group_sample[1]
    assert sample == {"groups": len(GRID), "groups_drawn": len(GRID), "largest": SEEDS, "largest_drawn": views.GROUP_RUNS_DRAWN}


def test_the_curves_sample_is_read_while_the_answer_is_computed(scale_store):
    """What the warm-up starts before computing the answer (`first_chart.read_curves_meanwhile`): the
    histories of exactly the runs and keys the curve chart draws, so the chart then reads nothing."""
    client, runs = runs_of(scale_store["uri"], scale_store["experiment_id"])
    cache = history_cache.HistoryCache()
    built = first_chart.build_views(client, cache, runs, runs, curve_data.CurveOptions(group=True), **KWARGS)
    first_chart.read_curves_meanwhile(built).join()
    assert set(cache.entries) == set(built.drawn["run_id"]) and len(cache.entries) == len(GRID) * views.GROUP_RUNS_DRAWN
    assert {entry.keys for entry in cache.entries.values()} == {frozenset(views.needed_keys(contract.ACCURACY))}
    read = built.load_stats.full
    built.prepare().page_spec("curves")
    assert built.load_stats.full == read and built.load_stats.cached == len(cache.entries)  # the chart found them all cached
    joined = first_chart.build_views(client, cache, runs, runs, curve_data.CurveOptions(group=True, join=True), **KWARGS)
    assert first_chart.read_curves_meanwhile(joined) is None  # a joined view follows predecessors first: not started


def test_each_column_draws_at_most_the_best_groups(scale_store, monkeypatch):
    client, runs = runs_of(scale_store["uri"], scale_store["experiment_id"])
    monkeypatch.setattr(views, "GROUPS_DRAWN", 2)
    built = first_chart.build_views(client, history_cache.HistoryCache(), runs, runs, curve_data.CurveOptions(group=True), **KWARGS)
    drawn = built.curves.points.drop_duplicates("line")
    best = built.comparison().table.groupby("stage").head(2)  # ranked best first per stage
    assert sorted(zip(drawn["stage"], drawn["lr"], strict=True)) == sorted(zip(best["stage"], best["lr"], strict=True))
    assert built.group_sample[1]["groups_drawn"] == 4


def test_a_running_run_and_an_older_runs_summary_come_from_their_own_history(scale_store, make_store):
    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("mixed")
    values = synthetic.history(1e-3, "full", EPOCHS, seed=1)
    current = synthetic.log_run(client, experiment_id, name="current", params=synthetic.params_for(1e-3, "full", seed=1), values=values)
    running = synthetic.log_run(client, experiment_id, name="running", params=synthetic.params_for(1e-3, "full", seed=2),
                                values={k: v[:3] for k, v in values.items()}, status="RUNNING")  # fmt: skip
    # A run of a version that logged best_val_accuracy and best_epoch only at its end.
    older = synthetic.log_run(client, experiment_id, name="older", params=synthetic.params_for(1e-3, "full", seed=3), values=values, summary=False)
    best = max(range(EPOCHS), key=lambda e: values[contract.VAL_ACCURACY][e])
    client.log_batch(older, metrics=[Metric(contract.BEST_VAL_ACCURACY, values[contract.VAL_ACCURACY][best], 0, 0), Metric(contract.BEST_EPOCH, best, 0, 0)])
    client, runs = runs_of(uri, experiment_id)
    cache = history_cache.HistoryCache()
    built = first_chart.build_views(store.open_client(uri), cache, runs, runs, curve_data.CurveOptions(), **KWARGS)
    table = built.summary.set_index("run_id")
    assert set(cache.entries) == {running, older}  # only those two, only the summary's keys
    assert {key for entry in cache.entries.values() for key in entry.keys} <= set(frames.SUMMARY_HISTORY_KEYS)
    gap = values[contract.ACCURACY][best] - values[contract.VAL_ACCURACY][best]
    for run_id in (current, older):
        assert table.at[run_id, "gap"] == pytest.approx(gap) and table.at[run_id, "epochs"] == EPOCHS
        assert table.at[run_id, "images_per_second"] == pytest.approx(float(np.median(values[contract.IMAGES_PER_SECOND])))
    assert table.at[running, "epochs"] == 3 and table.at[running, "state"] == "RUNNING"
    assert table.at[running, "best_val_accuracy"] == pytest.approx(max(values[contract.VAL_ACCURACY][:3]))


def test_the_page_draws_a_sample_of_each_group_and_says_so(scale_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", scale_store["uri"])
    page = AppTest.from_file(str(REPO / "app" / "dashboard.py"), default_timeout=120)
    page.query_params["exp"] = EXPERIMENT
    page.run()
    assert not page.exception and not page.error, [e.value for e in (*page.exception, *page.error)]
    served = page.session_state["_served"]
    # The drawn sample's histories (train and validation accuracy), no more.
    assert served["full"] + served["extended"] + served["incremental"] == len(GRID) * views.GROUP_RUNS_DRAWN, served
    assert served["points"] == len(GRID) * views.GROUP_RUNS_DRAWN * 2 * EPOCHS, served
    assert len(page.dataframe[0].value) == len(GRID) * SEEDS  # the table lists every run
    assert chart_data(curve_chart(page))["n_runs"].max() == views.GROUP_RUNS_DRAWN
    note = [c.value for c in page.caption if "verdicts above use every run" in c.value]
    assert note and f"at most {views.GROUP_RUNS_DRAWN} of its configuration's runs" in note[0] and f"up to {SEEDS}" in note[0], note
