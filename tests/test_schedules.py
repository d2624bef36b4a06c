"""The schedule formulas, epoch by epoch and batch by batch (the logged values are checked in test_training)."""

import math

import keras
import numpy as np
import pytest

from app.data import synthetic
from tests.conftest import tiny_config
from train import contract
from train.run.batch_schedule import BatchSchedule
from train.run.callbacks import EpochMetricsLogger
from train.run.schedules import learning_rate_at, rate_at_step


def rates(epochs=6, **overrides):
    config = tiny_config(epochs=epochs, lr=1e-3, **overrides)
    return [learning_rate_at(epoch, config) for epoch in range(epochs)]


def test_constant():
    assert rates() == [1e-3] * 6


@pytest.mark.parametrize("k", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_exponential(k):
    assert rates(schedule="exponential", decay=k) == pytest.approx([1e-3 * math.exp(-k * e) for e in range(6)])


def test_exponential_stops_after_decay_epochs():
    assert rates(schedule="exponential", decay=0.5, decay_epochs=2) == pytest.approx([1e-3 * math.exp(-0.5 * min(e, 2)) for e in range(6)])


def test_step_every_epochs_drop():
    assert rates(schedule="step", drop=0.5, epochs_drop=2) == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])


def test_step_at_milestones_like_the_lab():
    lab = rates(epochs=80, schedule="step", drop=0.1, milestones="40,60")
    assert lab[39] == pytest.approx(1e-3) and lab[40] == pytest.approx(1e-4)
    assert lab[59] == pytest.approx(1e-4) and lab[60] == pytest.approx(1e-5) and lab[79] == pytest.approx(1e-5)


def test_cosine_runs_from_lr_towards_zero():
    values = rates(epochs=5, schedule="cosine")
    assert values == pytest.approx([1e-3 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)])


def test_warmup_ramps_per_batch_from_near_zero_to_lr_then_hands_over():
    config = tiny_config(epochs=6, lr=1e-3, schedule="exponential", decay=0.5, warmup_epochs=2)
    steps = 10
    ramp = [rate_at_step(step, steps, config) for step in range(2 * steps)]
    assert ramp[0] == pytest.approx(1e-3 / 20)  # first batch of warm-up: ~0
    assert ramp[-1] == pytest.approx(1e-3)  # last batch of warm-up: the peak
    assert np.diff(ramp) == pytest.approx([1e-3 / 20] * 19)  # linear
    assert [rate_at_step(step, steps, config) for step in (20, 29, 30)] == pytest.approx([1e-3, 1e-3, 1e-3 * math.exp(-0.5)])
    logged = [learning_rate_at(epoch, config, steps) for epoch in range(6)]
    assert logged[:2] == pytest.approx([1e-3 * 5.5 / 20, 1e-3 * 15.5 / 20])  # the mean of each epoch's ramp
    assert logged[2:] == pytest.approx([1e-3 * math.exp(-0.5 * e) for e in range(4)])


def test_one_warmup_epoch_is_not_a_no_op():
    config = tiny_config(epochs=3, lr=1e-3, warmup_epochs=1)
    assert rate_at_step(0, 50, config) == pytest.approx(2e-5)
    assert learning_rate_at(0, config, 50) < 0.6e-3


def test_warmup_then_milestones_counts_absolute_epochs():
    values = rates(epochs=8, schedule="step", drop=0.1, milestones="5", warmup_epochs=2)
    assert values[2:] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4])


class RateOfEachBatch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_keras_trains_each_batch_at_its_rate_and_logs_the_epoch_mean():
    """A real fit: 4 batches an epoch, one warm-up epoch, then step; the logger gets the mean."""
    config = tiny_config(epochs=3, lr=1e-2, schedule="step", drop=0.5, epochs_drop=1, warmup_epochs=1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=config.lr), loss="sparse_categorical_crossentropy")
    images, labels = np.random.default_rng(0).normal(size=(32, 3)), np.arange(32) % 2
    seen, logged = RateOfEachBatch(), []
    logger = EpochMetricsLogger(32, lambda metrics, step: logged.append(metrics[contract.LEARNING_RATE]))
    history = model.fit(images, labels, batch_size=8, epochs=3, verbose=0, callbacks=[BatchSchedule(config, 4), seen, logger])
    for row in logger.rows:
        logger.publish(row)
    assert seen.rates == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 5e-3, 5e-3])
    expected = [learning_rate_at(epoch, config, 4) for epoch in range(3)]
    assert expected == pytest.approx([6.25e-3, 1e-2, 5e-3])
    assert logged == pytest.approx(expected)
    assert history.history[contract.LEARNING_RATE] == pytest.approx(expected)


@pytest.mark.parametrize(("schedule", "warmup"), [("constant", 2), ("exponential", 0), ("step", 3), ("cosine", 1)])
def test_synthetic_runs_log_the_rates_training_logs(schedule, warmup):
    config = tiny_config(epochs=25, lr=1e-3, schedule=schedule, warmup_epochs=warmup)
    steps = synthetic.SYNTHETIC_STEPS_PER_EPOCH
    assert synthetic.learning_rates(1e-3, schedule, 25, warmup) == pytest.approx([learning_rate_at(e, config, steps) for e in range(25)])
