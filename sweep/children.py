"""A sweep's child runs in MLflow: created before they train, a failure recorded on its run, the
runs a stopped worker leaves RUNNING closed, and the configurations whose run FINISHED found.
"""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from sweep import best
from sweep.filters import quoted
from sweep.plan import Phase
from train import contract
from train.messages import first_line


def create_child(study: str, phase: Phase, key: str, values: dict) -> str:
    """The child run, created up front so a configuration that fails before training is recorded too."""
    parent = mlflow.active_run()
    name = phase.label(values)
    tags = {
        MLFLOW_PARENT_RUN_ID: parent.info.run_id,
        MLFLOW_RUN_NAME: name.strip(),
        contract.TAG_KIND: contract.KIND_TRAIN,
        contract.TAG_SWEEP_STUDY: study,
        contract.TAG_SWEEP_PHASE: phase.name,
        contract.TAG_SWEEP_CONFIG: key,
    }
    return MlflowClient().create_run(parent.info.experiment_id, tags=tags, run_name=name.strip()).info.run_id


def record_failure(child_id: str, error: Exception) -> None:
    client = MlflowClient()
    client.set_tag(child_id, contract.TAG_STOP_REASON, f"failed: {first_line(error)}"[:500])
    if client.get_run(child_id).info.status == "RUNNING":  # failed before training started
        client.set_terminated(child_id, "FAILED")
    if mlflow.active_run() and mlflow.active_run().info.run_id == child_id:
        mlflow.end_run("FAILED")


def close_children(parent_id: str, reason: str) -> None:
    """KILLED for this worker's children still RUNNING: one stopped before its training began."""
    client = MlflowClient()
    for run in client.search_runs([mlflow.active_run().info.experiment_id], f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_id}' AND attributes.status = 'RUNNING'"):
        client.set_tag(run.info.run_id, contract.TAG_STOP_REASON, reason[:500])
        client.set_terminated(run.info.run_id, "KILLED")
    while mlflow.active_run() and mlflow.active_run().info.run_id != parent_id:  # a child the trainer did not end
        mlflow.end_run("KILLED")


def finished_keys(study: str, phase: str) -> set[str]:
    runs = mlflow.search_runs(
        experiment_ids=best.experiment_ids(),
        filter_string=f"tags.{contract.TAG_SWEEP_STUDY} = {quoted(study)} AND tags.{contract.TAG_SWEEP_PHASE} = {quoted(phase)} AND attributes.status = 'FINISHED'",
        output_format="list",
    )
    return {run.data.tags[contract.TAG_SWEEP_CONFIG] for run in runs}
