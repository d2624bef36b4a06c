"""Stopping cleanly: SIGTERM/SIGINT between batches, checkpoints at every epoch end.

A pre-empted machine sends SIGTERM and, a little later, SIGKILL. On the first signal the
current batch finishes (after fit(): the step in progress, such as logging the model),
training stops without validating a half epoch, the last completed epoch's checkpoint is
kept (locally and with the run) and the run is marked KILLED. `--resume RUN_ID`, or
`mlflow run --run-id RUN_ID`, continues from there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import keras

from train.config import cache_root
from train.errors import TrainingInterrupted
from train.run.signals import absorb_stop_signals, deferred_out_of_database_code, stop_signals_to


class GracefulStop(keras.callbacks.Callback):
    """For a whole run: SIGTERM/SIGINT become TrainingInterrupted, and the run records why.

    The signal is noted and acted on at the next safe point: inside fit() the next batch
    boundary (or the end of fit), outside it wherever the trainer calls `check()` (between
    its steps, and every few seconds while it waits for the tracking server). Raising from
    the handler itself would land anywhere, inside TensorFlow's or MLflow's code, and can
    turn into a SystemError. `on_stop(self)` runs as the exception leaves the block: the
    trainer marks the run KILLED there, so no run is left RUNNING by a signal.

    A second signal (Ctrl-C twice) means "now": it raises TrainingInterrupted at once (or just after
    the store call it lands in, which an exception would leave locked), or, once
    the run is already being stopped, sets `hurry` so the stop skips what can wait (sending the
    checkpoint) but still ends the run KILLED. Signals during `on_stop` never cut it short, nor,
    once a stop has ended the block, the process's way out (absorb_stop_signals).
    """

    def __init__(self, on_stop=None):
        super().__init__()
        self.signum: int | None = None
        self.epoch = 0
        self.in_fit = False
        self.hurry = False  # a second signal came: stop without the slow steps
        self.stopping = False  # on_stop is running (or the second signal's exception is on its way)
        self.on_stop = on_stop  # (GracefulStop) -> None, called once when a stop leaves the block
        self._routing = contextlib.ExitStack()

    def __enter__(self):
        self._routing.enter_context(stop_signals_to(self._handle))
        return self

    def __exit__(self, exc_type, exc, traceback):
        stopped = isinstance(exc, TrainingInterrupted | KeyboardInterrupt)
        try:
            if stopped and self.on_stop is not None:
                self.stopping = True
                self.signum = self.signum or signal.SIGINT  # a KeyboardInterrupt from before the handler was in place
                self.on_stop(self)
        finally:
            self._routing.close()
            if stopped:  # the stop is recorded and the process leaves: a late signal must not kill it on the way
                absorb_stop_signals()
        return False

    @property
    def reason(self) -> str:
        """What the run's stop_reason tag says."""
        name = signal.Signals(self.signum).name if self.signum else "a signal"
        return f"{name} during epoch {self.epoch}" if self.in_fit else f"{name} after training, before the run was complete"

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            return
        self.hurry = True  # a second signal: the user means it
        if not self.stopping:
            if deferred_out_of_database_code(signum, frame):  # raised there, the store stays locked and on_stop could not record the stop
                return
            self.stopping = True
            raise self._interrupted()

    def hurried(self) -> bool:
        return self.hurry

    def on_train_begin(self, logs=None):
        self.in_fit = True

    def on_train_end(self, logs=None):
        self.check()  # a signal during the last batches or the last validation
        self.in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.check()

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_test_batch_end(self, batch, logs=None):
        self.check()

    def check(self) -> None:
        """Raise TrainingInterrupted if a stop signal came."""
        if self.signum is not None:
            self.stopping = True
            raise self._interrupted()

    def _interrupted(self) -> TrainingInterrupted:
        stop = TrainingInterrupted(self.signum, self.epoch)
        if not self.in_fit:
            stop.args = (f"stopped by {self.reason}",)
        return stop


def checkpoint_dir(run_id: str) -> Path:
    return cache_root() / "checkpoints" / run_id


def remove_checkpoint(run_id: str) -> None:
    """Delete the run's local checkpoint: it finished, or its weights are not worth resuming."""
    shutil.rmtree(checkpoint_dir(run_id), ignore_errors=True)


class EpochCheckpoint(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore (weights, optimizer state, epoch) plus each epoch's metrics.

    At every epoch end the metrics logger (callbacks.EpochMetricsLogger) has it save the
    checkpoint and write the epoch's metrics beside it, then logs them. A process killed at
    any point resumes with every epoch logged exactly once: epochs in the checkpoint but
    not in the store are sent on resume.
    Keras deletes its checkpoint whenever fit() returns, even after TerminateOnNaN; this
    one is deleted once the run has FINISHED, or failed on a NaN loss (its weights are NaN), and
    by a sweep for a child that failed or was interrupted (the sweep trains it afresh).
    """

    def __init__(self, run_id: str):
        super().__init__(str(checkpoint_dir(run_id)), save_freq="epoch", delete_checkpoint=False)
        self.run_id = run_id

    def on_epoch_end(self, epoch, logs=None):
        """Nothing here: the logger calls save_epoch once it has measured the epoch."""

    def save_epoch(self, epoch: int, logs: dict, row: dict[str, float]) -> None:
        super().on_epoch_end(epoch, logs)  # Keras' own save: weights, optimizer, epoch
        rows = [r for r in saved_epochs(self.run_id) if r["epoch"] != epoch] + [row]
        write_atomically(_epochs_file(self.run_id), json.dumps(rows))


def _epochs_file(run_id: str) -> Path:
    return checkpoint_dir(run_id) / "epochs.json"


def write_atomically(path: Path, text: str) -> None:
    """Whole or not at all: a kill mid-write leaves the previous file, never half of one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def saved_epochs(run_id: str) -> list[dict[str, float]]:
    """The per-epoch metrics kept with the checkpoint ([] when there are none, or the file is not such a list:
    a resume then trains the epochs the store lacks again rather than failing)."""
    path = _epochs_file(run_id)
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    fine = isinstance(rows, list) and all(isinstance(row, dict) and isinstance(row.get("epoch"), int) for row in rows)
    if not fine:
        print(f"warning: {path} is not the checkpoint's list of epochs; ignored", file=sys.stderr, flush=True)
    return rows if fine else []


def completed_epochs(run_id: str) -> int:
    """How many epochs the local checkpoint of `run_id` holds (0 when there is none)."""
    metadata = checkpoint_dir(run_id) / "training_metadata.json"
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
