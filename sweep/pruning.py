"""The Keras callbacks that connect a training run to its sweep: its Optuna trial, and its claim.

Each epoch it reports `val_accuracy` to the trial (Optuna's pruner compares it with the
other runs of the phase at the same epoch) and stops a hopeless run. (The claim's heartbeat
runs on time, from sweep/claims.py, not here: an epoch can outlast the stale window.) A pruned run ends normally, so its curve, model and history are kept;
its tags say it was pruned and when. `ClaimWatch` stops a child whose claim another worker
took over (sweep/claims.py), at the next batch, so the configuration is not trained twice.
"""

from __future__ import annotations

import keras
import mlflow
import optuna

from train import contract


def make_pruner(kind: str, startup_trials: int, warmup_epochs: int) -> optuna.pruners.BasePruner:
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup_epochs), reduction_factor=3)
    return optuna.pruners.NopPruner()


class TrialReporter(keras.callbacks.Callback):
    def __init__(self, trial: optuna.Trial):
        super().__init__()
        self.trial = trial
        self.pruned_after: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(contract.VAL_ACCURACY)
        if value is None:
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned_after = epoch
            pruner = type(self.trial.study.pruner).__name__
            mlflow.set_tags({contract.TAG_PRUNED: "true", contract.TAG_STOP_REASON: f"pruned by Optuna {pruner} after epoch {epoch} (val_accuracy {float(value):.4f})"})
            self.model.stop_training = True


class ClaimLost(RuntimeError):
    """This worker's claim on the configuration went to another worker; its child stops (KILLED)."""


class ClaimWatch(keras.callbacks.Callback):
    """Raise ClaimLost at the first batch after the claim's heartbeat found it gone."""

    def __init__(self, heartbeat):
        super().__init__()
        self.heartbeat = heartbeat

    def on_train_batch_end(self, batch, logs=None):
        if self.heartbeat.lost.is_set():
            raise ClaimLost(self.heartbeat.reason)

    on_test_batch_end = on_train_batch_end
