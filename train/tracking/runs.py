"""A training run's records in MLflow: its name, its params once, its model, the registry.

The store itself (connecting, checks, timeouts) is `train.tracking.store`; resuming a run is
`train.run.resume`.
"""

from __future__ import annotations

import os
import re

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from train import contract
from train.config import ConfigError, TrainConfig
from train.messages import first_line
from train.tracking import mlflow_private
from train.tracking.store import PROBE_HTTP_LIMITS, http_limits

# MLflow's generated run names look like "bold-owl-123": those we may replace.
_GENERATED_RUN_NAME = re.compile(r"^[a-z]+-[a-z]+-\d+$")


MODEL_URI_SCHEMES = ("runs:", "models:", "file:")  # the tracking store's models, or a local copy of one (its MLmodel names the run)


def resolve_model_run(model_uri: str) -> str:
    """The run that logged the model behind `model_uri` (runs:/, models:/NAME@ALIAS, models:/NAME/N)."""
    if re.match(r"^[A-Za-z][\w+.-]*:", model_uri) and not model_uri.startswith(MODEL_URI_SCHEMES):  # http://, s3://: tracebacks in MLflow
        raise ConfigError(f"init_model '{model_uri}' is not a model in the tracking store; give runs:/RUN_ID/model, "
                          "models:/NAME@ALIAS or models:/NAME/VERSION (log or register the model there first)")
    try:
        info = mlflow.models.get_model_info(model_uri)
    except (MlflowException, OSError) as error:
        raise ConfigError(f"init_model '{model_uri}' does not resolve: {first_line(error)}") from None
    if "keras" not in info.flavors:
        raise ConfigError(f"init_model '{model_uri}' is not a Keras model (flavors: {', '.join(sorted(info.flavors)) or 'none'}); fine-tune a model that lrlab trained")
    if not info.run_id:
        raise ConfigError(f"init_model '{model_uri}' is not linked to a training run")
    return info.run_id


def record_failed_start(config: TrainConfig, reason: str) -> None:
    """Under `mlflow run` the run exists before lrlab starts: one that fails its checks gets a
    name, the reason as stop_reason, and FAILED. Best effort, bounded: the store may be what failed."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        with http_limits(PROBE_HTTP_LIMITS):
            client = MlflowClient(contract.tracking_uri())
            current = client.get_run(run_id).info.run_name or ""
            if config.run_name or not current or _GENERATED_RUN_NAME.match(current):
                client.set_tag(run_id, "mlflow.runName", run_name(config))
            client.set_tag(run_id, contract.TAG_STOP_REASON, reason[:5000])
            client.set_terminated(run_id, "FAILED")
    except Exception:  # noqa: BLE001, S110 - the one-line error the user sees matters more than this record
        pass


def run_name(config: TrainConfig) -> str:
    return config.run_name or f"{config.stage} lr={config.lr:g}"


def name_run(config: TrainConfig) -> None:
    """Give the run a readable name unless the user named it (mlflow run --run-name)."""
    run = mlflow.active_run()
    current = run.info.run_name or ""
    if config.run_name or not current or _GENERATED_RUN_NAME.match(current):
        mlflow.set_tag("mlflow.runName", run_name(config))


def log_params_once(params: dict[str, str]) -> None:
    """Log the params the run does not have yet.

    `mlflow run` already logged every MLproject parameter as typed ("1e-6"); logging the
    parsed value again ("1e-06") is an error in MLflow, so those are left as they are.
    """
    run_id = mlflow.active_run().info.run_id
    existing = MlflowClient().get_run(run_id).data.params
    missing = {key: value for key, value in params.items() if key not in existing}
    if missing:
        mlflow.log_params(missing)


def model_uri_of_run(run_id: str) -> str:
    """The logged model of a training run (models:/m-...), for the registry; runs:/ID/model if none is found."""
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    models = mlflow.search_logged_models(experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list", max_results=1)
    return f"models:/{models[0].model_id}" if models else f"runs:/{run_id}/{contract.MODEL_ARTIFACT}"


def register(model_uri: str, name: str, alias: str) -> int:
    """Register a model version under `name` and point `alias` (the stage) at it."""
    version = mlflow.register_model(model_uri, name)
    move_alias(name, alias, int(version.version))
    return int(version.version)


def move_alias(name: str, alias: str, version: int) -> str:
    """Point `name@alias` at `version` and say what moved, from which version to which, with each one's
    best val_accuracy; a move to a worse model is a warning naming how to move it back. Returns the line."""
    client = MlflowClient()
    try:
        old = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        old = None
    client.set_registered_model_alias(name, alias, str(version))
    if old is None:
        line = f"registered {name} version {version} as {name}@{alias}"
    elif int(old.version) == version:
        return ""
    else:
        before, after = _best_of(client, old.run_id), _best_of(client, client.get_model_version(name, str(version)).run_id)
        line = (f"{name}@{alias} moved from version {old.version} (best val_accuracy {_shown(before)}) "
                f"to version {version} ({_shown(after)})")
        if before is not None and after is not None and after < before:
            line = (f"warning: {line}: a worse model; move it back with "
                    f"`python -c \"from mlflow import MlflowClient; MlflowClient().set_registered_model_alias('{name}', '{alias}', {old.version})\"`")
    print(line, flush=True)
    return line


def _best_of(client: MlflowClient, run_id: str | None) -> float | None:
    try:
        return client.get_run(run_id).data.metrics.get(contract.BEST_VAL_ACCURACY) if run_id else None
    except MlflowException:
        return None


def _shown(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"


def log_keras_model(model, signature, input_example, pip_requirements):
    """mlflow.keras.log_model under the contract's name, with signature and input example
    (with three fixes to MLflow's Keras flavor: `mlflow_private.keras_log_model_fixes`)."""
    with mlflow_private.keras_log_model_fixes():
        return mlflow.keras.log_model(
            model,
            name=contract.MODEL_ARTIFACT,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
        )
