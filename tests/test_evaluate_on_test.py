"""evaluate_on_test: a training run's model evaluated once on its data's held-out test/ split.

The session's tiny model, trained on the demo data (train/, val/ and a held-out test/) once per
pytest process (tests/conftest.py's tiny_trained_store), is evaluated in a copy of its store; the evaluation
runs inside an active run, as at the end of a sweep, and a second call evaluates nothing.
"""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import copy_store, use_store
from train import contract
from train.tools.evaluate import evaluate_on_test, wilson_interval


def test_wilson_interval_of_a_proportion():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 10)[0] == pytest.approx(0.0)


def test_a_folder_without_a_held_out_test_split_is_not_evaluated(tracking_uri, tmp_path):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cats").mkdir(parents=True)
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("no-test")).info.run_id
    assert evaluate_on_test(run_id, str(tmp_path / "data")) is None
    assert contract.TEST_ACCURACY not in client.get_run(run_id).data.metrics


@pytest.fixture
def trained(tmp_path, monkeypatch, tiny_trained_store):
    """The session's tiny trained run (tests/conftest.py), in this test's copy of its store."""
    uri = copy_store(tiny_trained_store.folder, tmp_path / "store")
    monkeypatch.chdir(tmp_path)
    with use_store(uri, monkeypatch):
        yield tiny_trained_store


@pytest.mark.slow  # trains for real (once per pytest process: tiny_trained_store)
def test_the_best_run_is_evaluated_once_on_test(trained):
    from train.data.demo import demo_folder

    client = MlflowClient()
    with mlflow.start_run(run_name="a sweep's parent") as parent:  # the sweep calls it with its parent run active
        result = evaluate_on_test(trained.run_id, "demo")
        assert mlflow.active_run().info.run_id == parent.info.run_id
    test_images = sum(1 for path in (demo_folder() / "test").rglob("*") if path.is_file())

    metrics = client.get_run(trained.run_id).data.metrics
    assert metrics[contract.TEST_ACCURACY] == pytest.approx(result.accuracy)
    assert metrics[contract.TEST_ACCURACY_LOW] < result.accuracy < metrics[contract.TEST_ACCURACY_HIGH]
    low, high = wilson_interval(round(result.accuracy * test_images), test_images)
    assert (metrics[contract.TEST_ACCURACY_LOW], metrics[contract.TEST_ACCURACY_HIGH]) == pytest.approx((low, high))

    evaluation = client.get_run(result.evaluation_run_id)
    assert evaluation.data.tags[contract.TAG_KIND] == contract.KIND_EVALUATE
    assert evaluation.data.tags[contract.TAG_EVALUATED_RUN_ID] == trained.run_id
    assert evaluation.data.tags[contract.TAG_EVALUATED_SPLIT] == "test"
    assert "mlflow.parentRunId" not in evaluation.data.tags  # not a child of the sweep: it is not a configuration
    assert evaluation.info.status == "FINISHED" and evaluation.info.experiment_id == client.get_run(trained.run_id).info.experiment_id
    assert int(evaluation.data.params["evaluated_images"]) == test_images
    assert evaluation.data.metrics[contract.EVAL_ACCURACY] == pytest.approx(result.accuracy)

    again = evaluate_on_test(trained.run_id, "demo")
    assert again.evaluation_run_id is None and again.accuracy == result.accuracy
    evaluations = client.search_runs([evaluation.info.experiment_id], f"tags.{contract.TAG_EVALUATED_RUN_ID} = '{trained.run_id}'")
    assert len(evaluations) == 1
