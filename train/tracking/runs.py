"""MLflow glue: connect, start the run, log params once, log and register the model.

Everything that talks to the tracking server lives here, so the trainer reads as a list
of steps and the failure modes of a tracking store are handled in one place.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.tracking import MlflowClient

from train import contract
from train.config import ConfigError, TrainConfig, same_param
from train.errors import TrainingError
from train.messages import first_line, redact_uri, refusal, scrub, server_down, unreachable

# MLflow's generated run names look like "bold-owl-123": those we may replace.
_GENERATED_RUN_NAME = re.compile(r"^[a-z]+-[a-z]+-\d+$")
_OTHER_SCHEMES = ("file", "databricks", "databricks-uc", "uc")  # what MLflow 3.17 opens besides servers and databases


def connect(experiment: str = "") -> str:
    """Point MLflow at the tracking store after checking it answers; return the URI."""
    uri = contract.tracking_uri()
    bound_http_requests()
    check_store(uri)
    if uri.startswith("sqlite:///"):
        _create_sqlite_tables_once(uri)
    mlflow.set_tracking_uri(uri)
    # Under `mlflow run` the run and its experiment exist already (MLFLOW_RUN_ID).
    if not (mlflow.active_run() or "MLFLOW_RUN_ID" in os.environ):
        _choose_experiment(experiment)
    return uri


def _choose_experiment(experiment: str) -> None:
    """--experiment, else MLFLOW_EXPERIMENT_NAME, else MLFLOW_EXPERIMENT_ID, else the default name.

    (mlflow.set_experiment itself exports MLFLOW_EXPERIMENT_ID, so only a name given
    here wins over it in a process that trains more than once, such as a sweep.)
    """
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if not name and os.environ.get("MLFLOW_EXPERIMENT_ID"):
        try:
            mlflow.set_experiment(experiment_id=os.environ["MLFLOW_EXPERIMENT_ID"])
        except MlflowException:
            raise ConfigError(f"MLFLOW_EXPERIMENT_ID={os.environ['MLFLOW_EXPERIMENT_ID']} is not an experiment in {contract.tracking_uri()}; unset it or pass --experiment") from None
        return
    found = mlflow.set_experiment(name or contract.DEFAULT_EXPERIMENT)
    # When another process creates the experiment between MLflow's look-up and its create,
    # set_experiment (3.17) returns it WITHOUT making it active, and the run lands in
    # experiment 0 (or gets 403 on a server with auth). Activate it by id.
    mlflow.set_experiment(experiment_id=found.experiment_id)


def _create_sqlite_tables_once(uri: str) -> None:
    """Create a new SQLite store's tables under a file lock.

    MLflow creates the tables on first use; two processes doing that at once on a new
    file (a sweep, a test, 8 jobs launched together) fail with 'table already exists'.
    """
    import fcntl

    database = Path(uri.removeprefix("sqlite:///")).expanduser()
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists() or database.stat().st_size == 0:
            _copy_empty_store(database)
        MlflowClient(uri).search_experiments(max_results=1)


def _copy_empty_store(database: Path) -> None:
    """Start a new SQLite store as a copy of an empty one made once per MLflow version.

    MLflow builds a new store by creating its first schema and replaying every migration
    since (6-9 s); a copy takes milliseconds. The copy holds the tables only: MLflow then
    adds the Default experiment itself, with this store's own artifact location. Anything
    unexpected here leaves the store to MLflow's own (slow) creation.
    """
    import shutil

    import sqlalchemy
    from mlflow.store.db import utils as db_utils

    from train.config import cache_root

    template = cache_root() / "stores" / f"empty-mlflow-{mlflow.__version__}.db"
    partial = template.with_name(f"{template.name}.{os.getpid()}.partial")
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
            try:
                db_utils._initialize_tables(engine)  # MLflow's own creation, without the Default experiment
            finally:
                engine.dispose()
            os.replace(partial, template)  # whole or not at all, for processes that start together
        shutil.copyfile(template, database)
    except Exception:  # noqa: BLE001 - a faster start is not worth a failed one
        partial.unlink(missing_ok=True)
        database.unlink(missing_ok=True)


def check_store(uri: str) -> None:
    """Fail in seconds, with one line, when the tracking store cannot be used."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme in ("http", "https"):
        _check_server(uri)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in DATABASE_ENGINES:
        _connect_database(uri)
        _probe(uri, f"tracking store {redact_uri(uri)} cannot be opened", "start the database or fix MLFLOW_TRACKING_URI")
    elif scheme and scheme not in _OTHER_SCHEMES:
        raise ConfigError(f"tracking URI '{redact_uri(uri)}' has a scheme ('{scheme}') MLflow cannot open; use sqlite:///mlflow.db, http://HOST:PORT or postgresql://...")
    elif not scheme and not uri.startswith(("databricks", "file:")):
        raise ConfigError(f"tracking URI '{uri}' is not one MLflow 3 can open; use sqlite:///mlflow.db or http://HOST:PORT")


def _check_server(uri: str) -> None:
    reason = server_down(uri)  # any HTTP answer will do: authentication is for the first real call
    if reason is not None:
        raise ConfigError(unreachable(uri, reason))
    # /health is not the API: a server (or a proxy) can answer one and hang on the other.
    _probe(uri, f"tracking server {redact_uri(uri)} answers /health but not its API", "check the server's log, or set MLFLOW_TRACKING_URI")


def _probe(uri: str, failure: str, advice: str) -> None:
    """The first real call (it needs the credentials), bounded in time, as one line when it fails."""
    try:
        with http_limits(PROBE_HTTP_LIMITS):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - whatever the store says, the user gets one line
        refused = access_error(error, uri) if isinstance(error, MlflowException) else None
        raise refused or ConfigError(f"{failure} ({first_line(error)}); {advice}") from None


def _connect_database(uri: str) -> None:
    """One connection with a timeout: MLflow retries a database that is down 10 times over ~100 s,
    logging each attempt, and a host that drops packets waits for the TCP timeout."""
    import sqlalchemy

    timeout = {"postgresql": {"connect_timeout": 10}, "mysql": {"connect_timeout": 10}}.get(uri.split(":", 1)[0].split("+", 1)[0], {})
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=timeout)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as error:  # noqa: BLE001 - a missing driver, a refused connection, a wrong password: one line each
        cause = getattr(error, "orig", None) or error
        raise ConfigError(f"tracking store {redact_uri(uri)} cannot be opened ({scrub(first_line(cause), uri)}); start the database or fix MLFLOW_TRACKING_URI") from None


def _check_sqlite(uri: str) -> None:
    database = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
    folder = database.parent
    if not folder.is_dir():
        raise ConfigError(f"tracking store {uri}: folder '{folder}' does not exist; create it or set MLFLOW_TRACKING_URI")
    if database.is_file() and database.stat().st_size:
        with open(database, "rb") as file:
            if file.read(16) != b"SQLite format 3\x00":
                raise ConfigError(f"tracking store {uri}: '{database}' is not an SQLite database; move it away or set MLFLOW_TRACKING_URI to a new file")
    # SQLite writes a journal beside the database (and the table-creation lock lives there too).
    if not _can_write_in(folder) or (database.exists() and not os.access(database, os.W_OK)):
        raise ConfigError(f"tracking store {uri}: '{database}' or its folder is read-only (SQLite writes a journal beside the database); use a writable folder, e.g. MLFLOW_TRACKING_URI=sqlite:///$HOME/mlflow.db")


def _can_write_in(folder: Path) -> bool:
    """By trying: os.access says yes to root on a read-only mount."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


# Every call to a tracking server gets a timeout and few retries while training (MLflow's
# defaults, 120 s and 7 retries with backoff, let a server that accepts connections but
# never answers hold a run for over 15 minutes). Values the user exported win.
TRAINING_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
PROBE_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # the check at start: seconds, not minutes
# What the user exported before lrlab started; our own values, inherited by a child process
# (a test, a sweep worker), do not count.
_USER_HTTP_LIMITS = {key for key, ours in TRAINING_HTTP_LIMITS.items() if os.environ.get(key) not in (None, ours)}


def bound_http_requests() -> None:
    """Apply TRAINING_HTTP_LIMITS for the rest of the process (MLflow reads them per request)."""
    for key, value in TRAINING_HTTP_LIMITS.items():
        if key not in _USER_HTTP_LIMITS:
            os.environ[key] = value


@contextlib.contextmanager
def http_limits(limits: dict[str, str]):
    """Tighter limits around a few calls (unless the user set them), then back to what was there."""
    previous = {key: os.environ.get(key) for key in limits if key not in _USER_HTTP_LIMITS}
    os.environ.update({key: limits[key] for key in previous})
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def is_transient(error: BaseException) -> bool:
    """An outage worth waiting for (no connection, timeout, 5xx, 429), not a refusal (4xx) that retrying repeats."""
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    return isinstance(error, OSError)  # requests' connection errors and timeouts are OSErrors too


def store_error(error: BaseException) -> TrainingError | None:
    """One line for a tracking server that stopped answering mid-run (after the timeouts and
    retries of TRAINING_HTTP_LIMITS), else None."""
    if not (isinstance(error, MlflowException) and is_transient(error) and "API request to" in str(error)):
        return None
    return TrainingError(f"tracking store {redact_uri(contract.tracking_uri())} stopped answering ({first_line(error)}); "
                         "the run may be left RUNNING: `python -m train.tracking.stale --mark` finds it, --resume RUN_ID continues it")


def access_error(error: MlflowException, uri: str | None = None) -> ConfigError | None:
    """A one-line ConfigError when the server refused the credentials or the permission, else None."""
    refused = refusal(error, uri or contract.tracking_uri(), need="EDIT permission on the experiment", alternative="pick another with --experiment")
    return ConfigError(refused) if refused else None


def resolve_model_run(model_uri: str) -> str:
    """The run that logged the model behind `model_uri` (runs:/, models:/NAME@ALIAS, models:/NAME/N)."""
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
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return int(version.version)


def log_keras_model(model, signature, input_example, pip_requirements):
    """mlflow.keras.log_model under the contract's name, with signature and input example.

    Two changes to MLflow 3.17.2's Keras flavor, for the duration of the call only:
    - it writes input_example.json before it creates the model folder, so any input
      example fails with FileNotFoundError: the folder is created first;
    - it then loads the model it just saved and predicts the example, to "validate the
      serving input": 5-10 s a run (the Keras file read back, a predict function traced),
      and a failure there is only a logged warning, never an error. The Keras flavor
      offers no switch for it, so it is skipped; tests/test_serving.py serves a logged
      model for real, and tests check that pyfunc predicts the logged example like Keras.
    """
    import mlflow.keras.save as keras_save
    import mlflow.models.utils as model_utils

    original_save_example, original_validate = keras_save._save_example, model_utils._validate_serving_input

    def save_example_into_new_folder(mlflow_model, example, path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        return original_save_example(mlflow_model, example, path, *args, **kwargs)

    keras_save._save_example = save_example_into_new_folder
    model_utils._validate_serving_input = lambda model_uri, serving_input: None
    try:
        return mlflow.keras.log_model(
            model,
            name=contract.MODEL_ARTIFACT,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
        )
    finally:
        keras_save._save_example, model_utils._validate_serving_input = original_save_example, original_validate


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
    ignored = {"resume", "run_name", "experiment"}
    for name, value in config.as_params().items():
        logged = run.data.params.get(name)
        if name not in ignored and logged is not None and not same_param(logged, value):
            raise ConfigError(f"resume: {name}={value} but run '{run_id}' was started with {name}={logged}; resume with the same parameters")


