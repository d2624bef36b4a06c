"""The real `mlflow run` command line, as users type it."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_MODEL, copy_store, mlflow_run
from train import contract

pytestmark = pytest.mark.slow

TINY_P = {"data": "demo", "image_size": 64, "alpha": 0.35, "weights": "none", "epochs": 1, "batch_size": 32}


def _runs(tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tests")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_finetune_from_a_registered_alias(tmp_path, monkeypatch, tiny_trained_store):
    """The scratch model is the session's shared one (trained and registered once, copied here)."""
    tracking_uri = copy_store(tiny_trained_store.folder, tmp_path)
    monkeypatch.chdir(tmp_path)
    second = mlflow_run({**TINY_P, "stage": "finetune", "init_model": f"models:/{TINY_MODEL}@scratch", "lr": "1e-6"}, tracking_uri)
    assert second.returncode == 0, second.stderr[-3000:]
    scratch, finetune = _runs(tracking_uri)
    assert scratch.info.run_id == tiny_trained_store.run_id and str(tmp_path) in finetune.info.artifact_uri
    assert scratch.info.status == finetune.info.status == "FINISHED"
    assert finetune.data.tags[contract.TAG_INIT_RUN_ID] == scratch.info.run_id
    assert finetune.data.params["lr"] == "1e-6", "params are logged once, as mlflow run was given them"
    assert finetune.info.run_name == "finetune lr=1e-06"
    for name in contract.EPOCH_METRICS:
        assert len(MlflowClient(tracking_uri).get_metric_history(finetune.info.run_id, name)) == 1


def test_bad_parameter_under_mlflow_run_leaves_no_run_running(tracking_uri):
    done = mlflow_run({**TINY_P, "lr": "-1"}, tracking_uri, timeout=120)
    assert done.returncode != 0
    assert "error: lr must be a number greater than 0 (got -1.0)" in done.stderr
    assert [run.info.status for run in _runs(tracking_uri)] == ["FAILED"]
