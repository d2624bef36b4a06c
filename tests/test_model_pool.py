"""A sweep's children reuse one compiled model (train/model/pool.py) and still train as runs of their own."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sweep.cli import main as sweep_main
from tests.conftest import subprocess_env, tiny_config
from train import contract
from train.model.pool import ModelPool, graph_key

COMPARED = [name for name in contract.EPOCH_METRICS if name not in (contract.EPOCH_SECONDS, contract.IMAGES_PER_SECOND)]
SHARED = {"data": "demo", "stage": "scratch", "weights": "none", "image_size": "64", "alpha": "0.35", "epochs": "2",
          "batch_size": "16", "seed": "7", "deterministic": "true"}  # fmt: skip


def test_the_graph_key_ignores_what_only_changes_starting_values_or_rates():
    base = graph_key(tiny_config(), classes=6)
    assert graph_key(tiny_config(lr=1e-7, seed=3, schedule="cosine", warmup_epochs=0, epochs=5, weights="imagenet"), classes=6) == base
    for changed in ({"dropout": 0.5}, {"alpha": 0.5}, {"model": "efficientnet_b0"}, {"stage": "full"}, {"optimizer": "sgd"}, {"image_size": 96}):
        assert graph_key(tiny_config(**changed), classes=6) != base, changed
    assert graph_key(tiny_config(), classes=7) != base
    assert graph_key(tiny_config(deterministic=True), classes=6) != base, "a model traced under op determinism never serves a run without it"
    assert graph_key(tiny_config(), classes=6, bn_momentum=0.9) != graph_key(tiny_config(), classes=6, bn_momentum=0.99)


def _compiled(config, bn_momentum=0.9):
    import keras

    from train.model.build import build_model
    from train.run.trainer import compile_for

    model = build_model(6, config, bn_momentum)
    compile_for(model, config, accuracy=True)  # as training compiles it: the optimizer's slots built
    return model, keras


def test_a_kept_model_is_handed_out_with_the_fresh_models_weights_seeds_and_optimizer_state():
    config = tiny_config(image_size=32)
    kept, keras = _compiled(config)
    key = graph_key(config, classes=6)
    for variable in kept.variables + kept.optimizer.variables:  # as a finished child leaves it: trained weights, moments, step
        variable.assign(keras.ops.ones_like(variable) * 3)
    pool = ModelPool()
    pool.keep(key, kept, strategy="default")
    fresh, _ = _compiled(config)

    lent = pool.take(key, fresh, strategy="default")

    assert lent is kept and pool.reused == 1
    for value, variable in zip(fresh.variables + fresh.optimizer.variables, kept.variables + kept.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), np.asarray(value), err_msg=variable.path)
    assert int(kept.optimizer.iterations.numpy()) == 0
    assert any("seed_generator" in variable.path for variable in kept.variables), "dropout's seed state is copied too"


def test_a_different_graph_a_different_strategy_or_a_model_never_given_back_gets_the_fresh_model():
    config = tiny_config(image_size=32)
    kept, _ = _compiled(config)
    key = graph_key(config, classes=6)
    pool = ModelPool()
    for other_key, strategy in ((graph_key(tiny_config(image_size=32, dropout=0.5), classes=6), "default"), (key, "mirrored")):
        pool.keep(key, kept, strategy="default")
        fresh, _ = _compiled(config)
        assert pool.take(other_key, fresh, strategy) is fresh
    import tensorflow as tf

    spec = tf.TensorSpec((None, 32, 32, 3), tf.uint8)
    pool.keep(key, kept, strategy="default")
    step = pool.inference_step(kept, spec)
    assert pool.take(key, _compiled(config)[0], "default") is kept
    assert pool.inference_step(kept, spec) is step, "the kept model's traced inference step goes with it"
    fresh, _ = _compiled(config)
    assert pool.take(key, fresh, "default") is fresh, "a model lent out and not given back (its fit raised) is not lent again"
    assert pool.inference_step(fresh, spec) is not step
    assert pool.reused == 1


@pytest.mark.slow  # trains for real: a sweep of two children, then the second configuration as a run of its own
def test_a_sweep_child_on_the_kept_model_skips_the_trace_and_logs_the_curve_its_own_run_logs(tmp_path, tracking_uri):
    overrides = [part for name, value in SHARED.items() for part in (f"--{name}", value)]
    assert sweep_main(["--lrs", "1e-2,3e-3", *overrides]) == 0
    children = sorted(mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'", output_format="list"),
                      key=lambda run: run.info.start_time)  # fmt: skip
    assert [float(run.data.params["lr"]) for run in children] == [1e-2, 3e-3]

    alone = subprocess.run([sys.executable, "-m", "train", *(f"--{name.replace('_', '-')}={value}" for name, value in SHARED.items()), "--lr", "3e-3",
                            "--experiment", "alone"], cwd=tmp_path, env=subprocess_env(tracking_uri, CUDA_VISIBLE_DEVICES=""),
                           capture_output=True, text=True, timeout=900)  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    (own,) = mlflow.search_runs(experiment_names=["alone"], output_format="list")

    client = MlflowClient()

    def curves(run):
        return {name: [m.value for m in sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)] for name in COMPARED}

    assert curves(children[1]) == curves(own)  # exactly: the kept model started where a fresh one starts
    assert curves(children[1]) != curves(children[0])
    first_epoch = [_first_epoch_seconds(run) for run in children]
    assert first_epoch[1] < 0.5 * first_epoch[0], f"the second child's first epoch traced again: {first_epoch}"


def _first_epoch_seconds(run) -> float:
    return min(MlflowClient().get_metric_history(run.info.run_id, contract.EPOCH_SECONDS), key=lambda m: m.step).value


@pytest.mark.slow  # trains for real: a sweep under MirroredStrategy (2 logical CPUs, its own process), then two fine-tuning children
def test_mirrored_and_finetune_children_reuse_the_kept_model_too(tmp_path, tracking_uri):
    from train.run.trainer import train

    # Its own process: the CPU splits into logical devices only before TensorFlow initialises.
    args = ["--lrs", "1e-2,3e-3", "--strategy", "mirrored", "--epochs", "1", *(part for name, value in SHARED.items() if name != "epochs" for part in (f"--{name}", value))]
    done = subprocess.run([sys.executable, "-m", "sweep", *args], cwd=tmp_path, env=subprocess_env(tracking_uri, CUDA_VISIBLE_DEVICES=""),
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, second = sorted(mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'", output_format="list"),
                           key=lambda run: run.info.start_time)  # fmt: skip
    assert "2 replicas" in first.data.params["device"]
    assert _first_epoch_seconds(second) < 0.5 * _first_epoch_seconds(first), "one MirroredStrategy per process, so its model is kept"

    finetune = ModelPool()
    runs = [train(tiny_config(stage="finetune", init_model=f"runs:/{first.info.run_id}/model", lr=lr), models=finetune) for lr in (1e-4, 1e-5)]
    assert finetune.reused == 1
    losses = [[epoch[contract.LOSS] for epoch in run.history] for run in runs]
    assert np.isfinite(losses).all() and losses[0] != losses[1]


@pytest.mark.slow  # trains for real: two one-epoch children, deterministic then not
def test_a_deterministic_child_does_not_make_the_later_children_of_its_sweep_deterministic(tracking_uri):
    """Issue 19: enable_op_determinism is process-wide, and the trainer only turns it on: after one
    deterministic=true child every later child of the sweep ran deterministic, without saying so."""
    from tensorflow.python.framework import config as tf_config

    from sweep import runner
    from sweep.cli import build_plan

    shared = {name: value for name, value in SHARED.items() if name not in ("deterministic", "epochs")}
    plan = build_plan("", {**shared, "epochs": "1", "lr": "3e-3", "deterministic": "true,false"}, 1, 0)
    assert [c["deterministic"] for c in plan.phases[0].configurations()] == [True, False]
    options = runner.SweepOptions(plan, experiment="determinism")
    result = runner.run_sweep(options)
    assert len(result.trained) == 2
    assert not tf_config.is_op_determinism_enabled(), "the last child asked for deterministic=false"
    assert options.models.reused == 0, "the deterministic child's kept model did not serve the other"
