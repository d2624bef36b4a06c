"""The dashboard on runs written by real (tiny) trainings: `python -m train` into a temporary store."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from streamlit.testing.v1 import AppTest

from app.analysis import curve_data, frames
from app.data import history_cache, run_search, store
from app.page import views
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import REPO, chart_data, curve_chart
from tests.conftest import subprocess_env
from train import contract

TINY = ["--data", "demo", "--epochs", "2", "--image-size", "64", "--alpha", "0.35", "--stage", "scratch", "--weights", "none", "--batch-size", "32"]
RATES = ("1e-3", "1e-2")


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    """Two tiny real trainings (two learning rates) in a fresh SQLite store; the URI and what each
    printed (stdout is a pipe, as in a log file)."""
    folder = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = subprocess_env(uri, CUDA_VISIBLE_DEVICES="")
    outputs = []
    for lr in RATES:
        done = subprocess.run([sys.executable, "-m", "train", *TINY, "--lr", lr], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        outputs.append(done.stdout)
    return uri, outputs


@pytest.mark.slow
def test_a_log_file_gets_one_plain_line_per_epoch_with_its_validation_metrics(trained_store):
    _, outputs = trained_store
    for output in outputs:
        assert "\x1b[" not in output, "no terminal colour codes in a log"
        epochs = re.findall(r"^\d+/\d+ - \d+s - .* - val_accuracy: [\d.]+ - val_loss: [\d.]+", output, flags=re.MULTILINE)
        assert len(epochs) == 2, output[-3000:]


@pytest.mark.slow
def test_loaders_read_what_training_logged(trained_store):
    client = store.open_client(trained_store[0])
    experiments = run_search.list_experiments(client)
    experiment_id = experiments.loc[experiments["name"] == contract.DEFAULT_EXPERIMENT, "experiment_id"].iloc[0]
    runs = run_search.search_runs(client, [experiment_id])
    assert sorted(runs["lr_label"]) == sorted(run_search.format_lr(float(lr)) for lr in RATES)
    assert set(runs["stage"]) == {"scratch"} and set(runs["kind"]) == {contract.KIND_TRAIN}
    raw = history_cache.HistoryCache().load(client, runs)
    history = frames.tidy_history(raw, runs)
    assert set(contract.EPOCH_METRICS) <= set(history["key"])
    assert set(history["epoch"]) == {0, 1}
    built = views.build(runs, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    table = built.summary.set_index("run_id")
    for run in runs.itertuples():
        assert table.at[run.run_id, "best_val_accuracy"] == pytest.approx(run.metrics[contract.BEST_VAL_ACCURACY])
        assert table.at[run.run_id, "best_epoch"] == run.metrics[contract.BEST_EPOCH]
        assert table.at[run.run_id, "state"] == "FINISHED"
        # The run-level metrics training logs at its end: a finished run's summary needs no history.
        assert set(contract.SUMMARY_METRICS) <= set(run.metrics) and not frames.needs_history(runs[runs["run_id"] == run.run_id]).any()
        own = history[history["run_id"] == run.run_id]
        at_best = own[own["epoch"] == run.metrics[contract.BEST_EPOCH]].set_index("key")["value"]
        assert run.metrics[contract.ACCURACY_AT_BEST] == pytest.approx(at_best[contract.ACCURACY])
        assert run.metrics[contract.EPOCHS_TRAINED] == 2
        assert run.metrics[contract.MEDIAN_IMAGES_PER_SECOND] == pytest.approx(own.loc[own["key"] == contract.IMAGES_PER_SECOND, "value"].median())
        assert table.at[run.run_id, "gap"] == pytest.approx(at_best[contract.ACCURACY] - at_best[contract.VAL_ACCURACY])
    assert built.curves.points["best"].sum() == 2


@pytest.mark.slow
def test_page_draws_real_runs(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store[0])
    page = AppTest.from_file(str(REPO / "app" / "dashboard.py"), default_timeout=60).run()
    assert not page.exception and not page.error
    data = chart_data(curve_chart(page))
    assert set(data["lr_label"].dropna()) == {run_search.format_lr(float(lr)) for lr in RATES}
    assert set(data["split"].dropna()) == {frames.TRAIN, frames.VALIDATION}
