"""The learning-rate range test: its curve, its suggestion against a real grid, restored weights."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import tiny_config
from train import contract
from train.tools.lr_find import main, suggestions

GRID = (1e-4, 1e-3, 1e-2)


def test_suggestions_follow_the_stated_rules():
    lrs = list(np.logspace(-6, 0, 61))
    # flat, then a steep fall around 1e-3, a minimum at 1e-2, then divergence
    loss = [2.0 - 1.5 / (1 + math.exp(-(math.log10(lr) + 3) * 4)) + (max(0, math.log10(lr) + 2) ** 2) * 3 for lr in lrs]
    steepest, minimum = suggestions(lrs, loss)
    assert 5e-4 <= steepest <= 2e-3
    assert minimum == pytest.approx(lrs[int(np.argmin(loss))] / 10)


def test_steepest_ignores_a_dip_in_the_flat_noise_decades_before_the_minimum():
    """The demo data's case: flat for decades, one steep wiggle early, the real fall near 1e-2."""
    lrs = list(np.logspace(-6, 0, 61))
    loss = [2.0 - 0.3 / (1 + math.exp(-(math.log10(lr) + 2.3) * 6)) + (max(0, math.log10(lr) + 1.5) ** 2) * 3 for lr in lrs]
    loss[20] -= 0.15  # 1e-4: a noisy stretch the moving average kept, steeper than the real fall
    steepest, minimum = suggestions(lrs, loss)
    lowest = lrs[int(np.argmin(loss))]
    assert lowest / 10 <= steepest <= lowest and 1e-3 <= steepest <= 1e-2


@pytest.mark.slow  # trains for real
def test_range_test_restores_the_weights(tracking_uri):
    import keras

    from train.data.pipeline import make_datasets
    from train.model.build import build_model
    from train.run.preflight import preflight
    from train.tools.lr_find import range_test

    config = tiny_config()
    checked = preflight(config)
    train_data, _ = make_datasets(checked.report, checked.images, 16, 0, False)
    model = build_model(len(checked.report.class_names), config, None)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    result = range_test(model, train_data, 1e-6, 10.0, steps=40)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert result.lrs == sorted(result.lrs) and len(result.lrs) <= 40


@pytest.mark.slow
def test_suggestion_is_a_cautious_start_and_the_minimum_is_within_a_decade_of_the_best_of_a_grid(tracking_uri, capsys):
    from train.model.pool import ModelPool
    from train.run.trainer import train

    common, grid = {"epochs": 3, "batch_size": 16, "experiment": "grid"}, ModelPool()  # as a sweep trains a grid: one trace
    best_lr = max(GRID, key=lambda lr: train(tiny_config(lr=lr, **common), models=grid).best_val_accuracy)

    code = main(["--data", "demo", "--stage", "scratch", "--weights", "none", "--image-size", "64", "--alpha", "0.35",
                 "--batch-size", "16", "--min-lr", "1e-6", "--max-lr", "1", "--steps", "100", "--experiment", "find"])
    assert code == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_LR_FIND}'", output_format="list")
    suggested = run.data.metrics[contract.SUGGESTED_LR]
    minimum = run.data.metrics["lr_min_loss_div10"] * 10
    # A cautious start: never above what the grid found best, and the curve's minimum near it.
    assert suggested <= best_lr, (suggested, best_lr)
    assert abs(math.log10(minimum / best_lr)) <= 1, (minimum, best_lr)
    client = MlflowClient()
    lrs = [m.value for m in sorted(client.get_metric_history(run.info.run_id, contract.LR_FIND_LR), key=lambda m: m.step)]
    losses = client.get_metric_history(run.info.run_id, contract.LR_FIND_LOSS)
    assert len(lrs) == len(losses) >= 20 and lrs == sorted(lrs)
    assert run.data.params["rule"] == "steepest"
    assert f"suggested lr: {suggested:.2g}" in capsys.readouterr().out


def test_bad_range_is_one_line(tracking_uri, capsys):
    assert main(["--min-lr", "1", "--max-lr", "1e-3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: need 0 < min_lr < max_lr (got 1, 0.001)"


@pytest.mark.slow  # trains for real
def test_scratch_model_has_the_batchnorm_momentum_training_uses(tracking_uri):
    """Keras' MobileNetV2 default (0.999) is not what a scratch run trains with on small data."""
    from train.model.build import auto_bn_momentum

    assert main(["--data", "demo", "--stage", "scratch", "--weights", "none", "--image-size", "64", "--alpha", "0.35",
                 "--batch-size", "16", "--min-lr", "1e-6", "--max-lr", "1e-2", "--steps", "20", "--experiment", "find"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_LR_FIND}'", output_format="list")
    expected = auto_bn_momentum(math.ceil(288 / 16))  # the demo data's 288 training images
    assert run.data.params["bn_momentum_used"] == f"{expected:g}" == "0.9"  # read from the model's layers


def test_one_batch_limit_and_it_is_mlflows():
    """lr_find split its steps at 900 while the dashboard's synthetic store used 1000: one constant, MLflow's own."""
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH

    assert contract.LOG_BATCH_MAX == MAX_METRICS_PER_BATCH
