"""The Keras callback that applies train/run/schedules.py batch by batch."""

from __future__ import annotations

import keras

from train import contract
from train.config import TrainConfig
from train.run.schedules import rate_at_step


class BatchSchedule(keras.callbacks.Callback):
    """Sets the optimizer's rate before each batch and puts the epoch's mean rate in the logs.

    Keras' LearningRateScheduler changes the rate only per epoch. The step is computed from
    the epoch and batch index Keras passes, so a resumed run (BackupAndRestore sets the
    first epoch) continues the ramp where it stopped.
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int):
        super().__init__()
        self.config = config
        self.steps_per_epoch = max(1, steps_per_epoch)
        self._epoch = 0
        self._rates: list[float] = []
        self._current: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._rates = []

    def on_train_batch_begin(self, batch, logs=None):
        rate = rate_at_step(self._epoch * self.steps_per_epoch + batch, self.steps_per_epoch, self.config)
        if rate != self._current:  # after warm-up: once per epoch
            self.model.optimizer.learning_rate = rate
            self._current = rate
        self._rates.append(rate)

    def on_epoch_end(self, epoch, logs=None):
        # Callbacks after this one (the epoch metrics logger, History) read the same dict.
        if logs is not None and self._rates:
            logs[contract.LEARNING_RATE] = sum(self._rates) / len(self._rates)
