"""Resuming a run: is it resumable with these parameters, its checkpoint, the epochs it logged.

The checkpoint is written at every epoch end (`train.run.interrupt`) and uploaded when a run
stops early, so another machine can continue it.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from train import contract
from train.config import ConfigError, TrainConfig, configuration, same_param

CHECKPOINT_ARTIFACT = "checkpoint"  # where an interrupted run keeps its last epoch checkpoint


def logged_epochs(run_id: str) -> set[int]:
    """Epochs the run has metrics for already (non-empty only when resuming)."""
    return {metric.step for metric in MlflowClient().get_metric_history(run_id, contract.LOSS)}


def epoch_history(run_id: str):
    """The run's per-epoch metrics as a DataFrame (epoch + contract.EPOCH_METRICS), from the store.

    Read back rather than kept in memory so a resumed run's history includes the epochs
    an earlier process trained.
    """
    import pandas as pd

    client = MlflowClient()
    columns = {}
    for name in contract.EPOCH_METRICS:
        columns[name] = {metric.step: metric.value for metric in client.get_metric_history(run_id, name)}
    epochs = sorted(set().union(*(values.keys() for values in columns.values())))
    frame = pd.DataFrame({"epoch": epochs})
    for name, values in columns.items():
        frame[name] = [values.get(epoch, float("nan")) for epoch in epochs]
    return frame


def fetch_checkpoint(run_id: str, folder: Path) -> None:
    """Bring the run's checkpoint from its artifacts when this machine has none."""
    if (folder / "training_metadata.json").exists():
        return
    try:
        downloaded = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT)
    except (MlflowException, OSError):
        raise ConfigError(f"run {run_id} has no checkpoint here or in its artifacts; it cannot be resumed, start a new run") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.copytree(downloaded, folder, dirs_exist_ok=True)


def check_resumable(run_id: str, config: TrainConfig) -> None:
    """The run exists, is a training run that did not finish, and had the same parameters."""
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        raise ConfigError(f"resume: run '{run_id}' not found in {contract.tracking_uri()}") from None
    if run.info.status == "FINISHED":
        raise ConfigError(f"resume: run '{run_id}' already FINISHED; start a new run (or finetune from runs:/{run_id}/model)")
    if run.data.tags.get(contract.TAG_KIND) != contract.KIND_TRAIN:
        raise ConfigError(f"resume: run '{run_id}' is not a training run")
    # Compared: the configuration and the repeat params (seed, init_model), each by its type (`''`
    # is empty, as `mlflow run` logs an empty default); not bookkeeping, not what this stage ignores.
    for name, value in configuration(config.as_params(), vary=()).items():
        logged = run.data.params.get(name)
        if logged is not None and not same_param(logged, value, name):
            raise ConfigError(f"resume: {name}={value} but run '{run_id}' was started with {name}={logged}; resume with the same parameters")


def forget_stop_reason(run_id: str) -> None:
    """A resumed run runs again: the stop_reason of its last stop no longer says why it ended."""
    client = MlflowClient()
    if contract.TAG_STOP_REASON in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, contract.TAG_STOP_REASON)


def retire_launcher_run(resumed_run_id: str) -> None:
    """Under `mlflow run -P resume=ID`, MLflow made a run of its own (MLFLOW_RUN_ID) before lrlab
    started; training continues in run ID, so that one stays empty. It is tagged kind=launcher (the
    page and the sweeps read kind=train runs only) with a stop_reason naming the run it resumed, and
    that is said in one line. It is not deleted: `mlflow run` ends it FINISHED once training exits,
    and MLflow 3.17 fails (a traceback, exit 1) on a run that is deleted by then."""
    launcher = os.environ.get("MLFLOW_RUN_ID")
    if not launcher or launcher == resumed_run_id:
        return
    client = MlflowClient()
    client.set_tag(launcher, contract.TAG_KIND, contract.KIND_LAUNCHER)
    client.set_tag(launcher, contract.TAG_STOP_REASON, f"empty: -P resume={resumed_run_id} continued that run instead")
    os.environ.pop("MLFLOW_RUN_ID")  # nothing else logs into it
    print(f"resume: mlflow run's own run {launcher} stays empty (tagged {contract.TAG_KIND}={contract.KIND_LAUNCHER}); "
          f"training continues in run {resumed_run_id}", flush=True)
