"""One configuration is one group however it was launched: `mlflow run -P` (params as typed: `3e-3`,
`false`, `''`), `python -m train` and sweep children (Python's spelling: `0.003`, `False`, empty),
or `MlflowClient.log_batch` by hand; params the run's stage or schedule ignores neither split nor
name groups. Through the app's own loaders, the page's views and the report's comparison."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from app import report
from app.analysis import curve_data, stats
from app.data import synthetic
from app.page import views
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import load
from tests.conftest import TINY, mlflow_run, run_train_cli, tiny_args
from train import contract
from train.config import TrainConfig

EXPERIMENT = "spellings"


def python_spelling(**values) -> dict[str, str]:
    """Every param as `python -m train` logs it (str() of the typed value)."""
    return TrainConfig(**values).as_params()


def mlflow_run_spelling(**values) -> dict[str, str]:
    """The same params as `mlflow run -P` logs them: numbers as typed, lower-case booleans, '' for empty."""
    params = python_spelling(**values)
    for name, value in params.items():
        if value in ("True", "False"):
            params[name] = value.lower()
        elif value == "":
            params[name] = "''"
    return {**params, "lr": f"{values['lr']:.0e}".replace("e-0", "e-")}  # 0.003 -> 3e-3


def comparison_of(uri: str) -> stats.Comparison:
    _, runs, history = load(uri, EXPERIMENT)
    built = views.build(runs, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    return built.comparison()


def curve(best: float) -> dict[str, list[float]]:
    return {contract.VAL_ACCURACY: [best - 0.1, best], contract.ACCURACY: [best - 0.05, best + 0.02]}


@pytest.fixture
def mixed_store(make_store):
    """scratch lr 3e-3 in both spellings, one run with weights=imagenet (scratch ignores it), one with
    decay=0.9 (constant ignores it); the same for lr 1e-3; and exponential runs whose decay differs."""
    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    base = {"stage": "scratch", "weights": "none", "image_size": 64, "epochs": 2}
    spellings = [
        python_spelling(lr=3e-3, seed=1, **base),
        mlflow_run_spelling(lr=3e-3, seed=2, **base),
        {**python_spelling(lr=3e-3, seed=3, **base), "weights": "imagenet", "device": "GPU 0", "num_classes": "6"},
        {**mlflow_run_spelling(lr=3e-3, seed=4, **base), "decay": "0.9", "run_name": "by hand"},
    ]
    for seed, params in enumerate(spellings):
        synthetic.log_run(client, experiment_id, name=f"scratch 3e-3 #{seed}", params=params, values=curve(0.80 + seed / 1000))
        synthetic.log_run(client, experiment_id, name=f"scratch 1e-3 #{seed}", params={**params, "lr": ["0.001", "1e-3"][seed % 2]}, values=curve(0.70 + seed / 1000))
    for decay, best in ((0.1, 0.6), (0.5, 0.5)):
        for seed in (1, 2):
            params = mlflow_run_spelling(lr=3e-3, seed=seed, schedule="exponential", decay=decay, **base)
            synthetic.log_run(client, experiment_id, name=f"exp {decay}", params=params, values=curve(best + seed / 1000))
    return uri


def test_mixed_spellings_and_ignored_params_make_one_group_named_by_what_differs(mixed_store):
    comparison = comparison_of(mixed_store)
    table = comparison.table
    assert comparison.params == ["decay", "schedule"]  # weights, augment, milestones, xla: one value each, so they name nothing
    assert list(zip(table["group"], table["n"], strict=True)) == [
        ("lr 3e-3, schedule constant", 4), ("lr 1e-3, schedule constant", 4),
        ("lr 3e-3, decay 0.1, schedule exponential", 2), ("lr 3e-3, decay 0.5, schedule exponential", 2),
    ]  # fmt: skip
    assert list(table["decay"]) == ["", "", "0.1", "0.5"]  # constant runs ignore decay: no value, whatever they logged
    assert list(table["verdict"]) == ["best", "worse", "worse", "worse"]
    assert not any(word in " ".join(stats.sentences(comparison)) for word in ("augment", "milestones", "(empty)", "weights", "xla"))


def test_the_report_writes_one_row_per_configuration(mixed_store):
    files = report.report_files("spellings", [], pd.DataFrame(columns=report.TABLE_COLUMNS), {}, comparison_of(mixed_store))
    rows = pd.read_csv(pd.io.common.BytesIO(files["data/comparison.csv"]))
    assert list(rows["n"]) == [4, 4, 2, 2]
    assert sorted(rows.columns[:5]) == ["decay", "lr", "model", "schedule", "stage"]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two trainings; on a loaded 2-core machine one took 7 minutes
def test_runs_from_mlflow_run_python_m_train_and_log_batch_are_one_group(make_store, tmp_path, monkeypatch):
    """The issue's case: `mlflow run -P` and `python -m train`, same configuration, other seeds
    (and weights=imagenet, which scratch ignores), plus one run by hand: one group of three."""
    uri = make_store()
    monkeypatch.chdir(tmp_path)
    values = {**TINY, "lr": 3e-3, "stage": "scratch", "epochs": 1}
    trained = run_train_cli([*tiny_args(lr=3e-3, seed=42), "--experiment", EXPERIMENT], uri, timeout=1200)
    assert trained.returncode == 0, trained.stderr[-2000:]
    launched = mlflow_run({**values, "lr": "3e-3", "weights": "imagenet", "seed": 43}, uri, experiment=EXPERIMENT, timeout=1200)  # as a user types it
    assert launched.returncode == 0, launched.stderr[-2000:]
    client = MlflowClient(tracking_uri=uri)
    logged = [run.data.params for run in client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])]
    assert {p["lr"] for p in logged} == {"0.003", "3e-3"}  # two spellings really are in the store
    by_hand = {**mlflow_run_spelling(**{**values, "seed": 44}), "lr": "0.0030"}
    synthetic.log_run(client, client.get_experiment_by_name(EXPERIMENT).experiment_id, name="by hand", params=by_hand, values=curve(0.5))
    table = comparison_of(uri).table
    assert list(table["n"]) == [3] and list(table["group"]) == ["lr 3e-3"], table.to_dict("records")
