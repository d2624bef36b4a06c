"""Keras callbacks: the per-epoch MLflow metrics and the NaN guard.

The metric names come from `contract`; this is the only code that logs per-epoch metrics.
"""

from __future__ import annotations

import math
import time

import keras

from train import contract


class EpochMetricsLogger(keras.callbacks.Callback):
    """Measures the contract's per-epoch metrics; `publish(epoch)` logs them with step = epoch.

    The epoch checkpoint calls `publish` once the epoch is saved, so a run never has
    metrics for an epoch that a resume would train again. Training throughput counts only
    the training part of the epoch (until validation starts), so `images_per_second`
    compares across validation-set sizes.
    """

    def __init__(self, train_images: int, log_metrics, logged_epochs: set[int] | None = None):
        super().__init__()
        self.train_images = train_images
        self.log_metrics = log_metrics  # (metrics, step) -> None: a MetricBuffer's log
        self.logged_epochs = set(logged_epochs or ())  # a resumed run keeps the values it already has
        self.rows: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        end = time.perf_counter()
        train_seconds = (self._train_end or end) - self._epoch_start
        metrics = {name: float(logs[name]) for name in (contract.LOSS, contract.ACCURACY, contract.VAL_LOSS, contract.VAL_ACCURACY) if name in logs}
        # The schedule callback puts the mean rate of the epoch's batches here (warm-up changes it per batch).
        metrics[contract.LEARNING_RATE] = float(logs.get(contract.LEARNING_RATE, keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        metrics[contract.EPOCH_SECONDS] = end - self._epoch_start
        metrics[contract.IMAGES_PER_SECOND] = self.train_images / max(train_seconds, 1e-9)
        self.rows.append({"epoch": epoch, **metrics})

    def publish(self, row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        if epoch not in self.logged_epochs:
            self.log_metrics({key: value for key, value in row.items() if key != "epoch"}, epoch)
            self.logged_epochs.add(epoch)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite batch loss and remembers where.

    Keras' TerminateOnNaN ends fit() as if training had finished; the trainer turns the
    position recorded here into a failed run instead.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.where: tuple[int, int] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.epoch, batch)
            self.model.stop_training = True
