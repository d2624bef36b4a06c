"""Stopping cleanly: SIGTERM/SIGINT between batches, checkpoints at every epoch end.

A pre-empted machine sends SIGTERM and, a little later, SIGKILL. On the first signal the
current batch finishes, training stops without validating a half epoch, the last
completed epoch's checkpoint is kept (locally and with the run) and the run is marked
KILLED. `--resume RUN_ID`, or `mlflow run --run-id RUN_ID`, continues from there.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import keras

from train.config import cache_root
from train.errors import TrainingInterrupted
from train.signals import stop_signals_to


class GracefulStop(keras.callbacks.Callback):
    """Turns SIGTERM/SIGINT into TrainingInterrupted at the next batch boundary."""

    def __init__(self):
        super().__init__()
        self.signum: int | None = None
        self.epoch = 0
        self._routing = contextlib.ExitStack()

    def __enter__(self):
        self._routing.enter_context(stop_signals_to(self._handle))
        return self

    def __exit__(self, *exc):
        self._routing.close()

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now, the user means it
            raise KeyboardInterrupt
        self.signum = signum

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._check()

    def on_train_batch_end(self, batch, logs=None):
        self._check()

    def on_test_batch_end(self, batch, logs=None):
        self._check()

    def _check(self):
        if self.signum is not None:
            raise TrainingInterrupted(self.signum, self.epoch)


def checkpoint_dir(run_id: str) -> Path:
    return cache_root() / "checkpoints" / run_id


def remove_checkpoint(run_id: str) -> None:
    """Delete the run's local checkpoint: it finished, or its weights are not worth resuming."""
    shutil.rmtree(checkpoint_dir(run_id), ignore_errors=True)


class EpochCheckpoint(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore (weights, optimizer state, epoch) plus each epoch's metrics.

    At every epoch end: save the checkpoint, write the epoch's metrics beside it, then
    log them. A process killed at any point resumes with every epoch logged exactly
    once: epochs in the checkpoint but not in the store are sent on resume.
    Keras deletes its checkpoint whenever fit() returns, even after TerminateOnNaN; this
    one is deleted once the run has FINISHED, or failed on a NaN loss (its weights are NaN), and
    by a sweep for a child that failed or was interrupted (the sweep trains it afresh).
    """

    def __init__(self, run_id: str, logger):
        super().__init__(str(checkpoint_dir(run_id)), save_freq="epoch", delete_checkpoint=False)
        self.run_id = run_id
        self.logger = logger

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        row = self.logger.rows[-1]
        rows = [r for r in saved_epochs(self.run_id) if r["epoch"] != epoch] + [row]
        _epochs_file(self.run_id).write_text(json.dumps(rows))
        self.logger.publish(row)


def _epochs_file(run_id: str) -> Path:
    return checkpoint_dir(run_id) / "epochs.json"


def saved_epochs(run_id: str) -> list[dict[str, float]]:
    """The per-epoch metrics kept with the checkpoint."""
    path = _epochs_file(run_id)
    return json.loads(path.read_text()) if path.exists() else []


def completed_epochs(run_id: str) -> int:
    """How many epochs the local checkpoint of `run_id` holds (0 when there is none)."""
    metadata = checkpoint_dir(run_id) / "training_metadata.json"
    return json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0
