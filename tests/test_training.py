"""The training pipeline end to end on the demo data: scratch -> weights file -> head -> finetune.

One SQLite store for the module; each stage's run is trained once (module fixtures) and
the tests read what it logged, as the dashboard and the sweeps will.
"""

from __future__ import annotations

import dataclasses
import json
import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import tiny_config
from train import contract
from train.config import TrainConfig
from train.run.schedules import learning_rate_at

pytestmark = pytest.mark.slow  # every test here reads runs these fixtures train for real


def _train(config: TrainConfig):
    from train.run.trainer import train

    return train(config)


@pytest.fixture(scope="module")
def scratch(store):
    config = tiny_config(epochs=5, lr=3e-3, batch_size=16, schedule="exponential", decay=0.1, warmup_epochs=1)
    return config, _train(config)


@pytest.fixture(scope="module")
def weights_file(scratch, store):
    """The scratch run's trained base, saved as a weights file: our stand-in for ImageNet."""
    config, result = scratch
    model = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
    base = next(layer for layer in model.layers if hasattr(layer, "layers"))
    path = store / "base.weights.h5"
    base.save_weights(path)
    return path


@pytest.fixture(scope="module")
def head(weights_file):
    config = tiny_config(stage="head", weights=str(weights_file), epochs=3, lr=3e-3, schedule="step", drop=0.5, milestones="2", register_as="demo")
    return config, _train(config)


@pytest.fixture(scope="module")
def finetune(head):
    config_head, result_head = head
    config = tiny_config(stage="finetune", init_model=f"runs:/{result_head.run_id}/model", epochs=2, lr=1e-5, schedule="cosine")
    return config, _train(config)


def _history(run_id: str, metric: str) -> list[float]:
    points = sorted(MlflowClient().get_metric_history(run_id, metric), key=lambda m: m.step)
    assert [p.step for p in points] == list(range(len(points))), f"{metric} steps are not 0..n-1"
    return [p.value for p in points]


def test_every_epoch_metric_once_per_epoch(scratch):
    config, result = scratch
    for name in contract.EPOCH_METRICS:
        assert len(_history(result.run_id, name)) == config.epochs, name
    run = MlflowClient().get_run(result.run_id)
    assert run.data.metrics[contract.BEST_VAL_ACCURACY] == pytest.approx(max(_history(result.run_id, contract.VAL_ACCURACY)))
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize("stage_fixture", ["scratch", "head", "finetune"])
def test_logged_learning_rate_follows_the_schedule(stage_fixture, request):
    config, result = request.getfixturevalue(stage_fixture)
    logged = _history(result.run_id, contract.LEARNING_RATE)
    steps = math.ceil(int(MlflowClient().get_run(result.run_id).data.params["train_images"]) / config.batch_size)
    expected = [learning_rate_at(epoch, config, steps) for epoch in range(config.epochs)]  # warm-up: the mean of each epoch's batches
    assert logged == pytest.approx(expected, rel=1e-5)


def test_scratch_on_small_data_validates_above_chance(scratch):
    """MobileNetV2's BatchNormalization momentum 0.999 keeps validation at chance here; auto fixes it."""
    config, result = scratch
    params = MlflowClient().get_run(result.run_id).data.params
    assert float(params["bn_momentum_used"]) == pytest.approx(0.9)
    chance = 1 / 6
    assert result.best_val_accuracy > chance + 0.15, result.history


def test_keras_default_bn_momentum_stays_at_chance_where_auto_learns(scratch):
    """The same run with MobileNetV2's own momentum (0.999): validation never leaves chance."""
    config, result = scratch
    stuck = _train(dataclasses.replace(config, bn_momentum="0.999"))
    assert stuck.best_val_accuracy < 1 / 6 + 0.05
    assert result.best_val_accuracy > stuck.best_val_accuracy + 0.15


def test_params_tags_and_artifacts(scratch):
    config, result = scratch
    client = MlflowClient()
    run = client.get_run(result.run_id)
    for name, value in config.as_params().items():
        assert run.data.params[name] == value
    assert run.data.tags[contract.TAG_KIND] == contract.KIND_TRAIN
    assert run.info.run_name == "scratch lr=0.003"
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {contract.HISTORY_FILE, contract.CLASS_NAMES_FILE, contract.CONFUSION_MATRIX_FILE, contract.DATA_REPORT_FILE} <= artifacts
    classes = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/{contract.CLASS_NAMES_FILE}"))
    assert classes == ["circle", "cross", "ring", "square", "stripes", "triangle"]
    history = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/{contract.HISTORY_FILE}"))
    assert list(history["epoch"]) == list(range(config.epochs))
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/{contract.DATA_REPORT_FILE}"))
    assert report["images"] == {"train": 288, "val": 72}
    assert run.inputs.dataset_inputs, "the data set is logged as a run input"


def test_logged_model_predicts_like_keras_on_raw_images(scratch):
    config, result = scratch
    keras_model = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype("float32")
    expected = keras_model.predict(images, verbose=0)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(images)), expected, rtol=1e-4, atol=1e-6)
    assert expected.sum(axis=1) == pytest.approx(np.ones(3), abs=1e-4)
    assert pyfunc.metadata.signature is not None
    assert pyfunc.metadata.saved_input_example_info is not None


def test_head_trains_only_the_classifier_and_registers(head):
    config, result = head
    client = MlflowClient()
    version = client.get_model_version_by_alias("demo", "head")
    assert version.run_id == result.run_id
    model = mlflow.keras.load_model("models:/demo@head")
    base = next(layer for layer in model.layers if hasattr(layer, "layers"))
    assert not base.trainable
    assert result.best_val_accuracy > 1 / 6 + 0.1


def test_finetune_starts_where_head_ended(head, finetune):
    _, head_result = head
    config, result = finetune
    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags[contract.TAG_INIT_RUN_ID] == head_result.run_id
    head_final = head_result.history[-1][contract.VAL_ACCURACY]
    first = result.history[0][contract.VAL_ACCURACY]
    assert math.isclose(first, head_final, abs_tol=0.1), (first, head_final)
    model = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
    from keras import layers

    from train.model.build import all_layers

    trainable = [layer.trainable for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization)]
    assert trainable and not any(trainable), "BatchNormalization stays frozen in finetune"
    convolutions = [layer.trainable for layer in all_layers(model) if isinstance(layer, layers.Conv2D)]
    assert all(convolutions)
