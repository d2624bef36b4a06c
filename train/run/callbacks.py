"""Keras callbacks: the per-epoch MLflow metrics and the NaN guard (loss, validation metrics, weights).

The metric names come from `contract`; this is the only code that logs per-epoch metrics.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from train import contract


class EpochMetricsLogger(keras.callbacks.Callback):
    """Measures the contract's per-epoch metrics at each epoch end and publishes them, step = epoch.

    With a `checkpoint` (interrupt.EpochCheckpoint) the epoch is saved first and published
    after, whatever the order of the callbacks, so a run never has metrics for an epoch
    that a resume would train again. Training throughput counts only the training part of
    the epoch (until validation starts), so `images_per_second` compares across
    validation-set sizes.
    """

    def __init__(self, train_images: int, log_metrics, logged_epochs: set[int] | None = None, checkpoint=None):
        super().__init__()
        self.train_images = train_images
        self.log_metrics = log_metrics  # (metrics, step) -> None: a MetricBuffer's log
        self.logged_epochs = set(logged_epochs or ())  # a resumed run keeps the values it already has
        self.checkpoint = checkpoint  # saves (epoch, logs, row) before the row is published
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
        row = {"epoch": epoch, **metrics}
        self.rows.append(row)
        if self.checkpoint is not None:
            self.checkpoint.save_epoch(epoch, logs, row)
        self.publish(row)

    def publish(self, row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        if epoch not in self.logged_epochs:
            self.log_metrics({key: value for key, value in row.items() if key != "epoch"}, epoch)
            self.logged_epochs.add(epoch)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite batch loss, validation metric or weight, and remembers which and where.

    Keras' TerminateOnNaN ends fit() as if training had finished, and watches only the loss:
    a rate high enough to overflow the weights can leave a finite, clipped loss beside NaN
    predictions. The trainer turns what is recorded here into a failed run instead.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.where: tuple[int, int | None] | None = None  # (epoch, batch; None for an epoch-end check)
        self.what = ""  # loss, val_loss, val_accuracy or weights

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop("loss", (self.epoch, batch))

    def on_epoch_end(self, epoch, logs=None):
        if self.where is not None:
            return
        logs = logs or {}
        bad = [name for name in (contract.VAL_LOSS, contract.VAL_ACCURACY) if name in logs and not math.isfinite(float(logs[name]))]
        if bad:
            self._stop(bad[0], (epoch, None))
        elif not all(np.isfinite(weights).all() for weights in self.model.get_weights()):
            self._stop("weights", (epoch, None))

    def _stop(self, what: str, where: tuple[int, int | None]) -> None:
        self.what, self.where = what, where
        self.model.stop_training = True

    @property
    def place(self) -> str:
        epoch, batch = self.where
        return f"epoch {epoch}" + (f", batch {batch}" if batch is not None else "")
