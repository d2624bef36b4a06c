"""The tracking store: connecting, checking it in seconds before a run, and bounding every call to it.

A store that is down, refused or not a database is one line before TensorFlow loads; while
training, every call to a server has a timeout and few retries (TRAINING_HTTP_LIMITS).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.tracking import MlflowClient

from train import contract
from train.config import ConfigError
from train.errors import TrainingError
from train.messages import first_line, redact_uri, refusal, scrub, server_down, unreachable

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

    from train.config import cache_root
    from train.tracking import mlflow_private

    template = cache_root() / "stores" / f"empty-mlflow-{mlflow.__version__}.db"
    partial = template.with_name(f"{template.name}.{os.getpid()}.partial")
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
            try:
                mlflow_private.create_tables(engine)  # MLflow's own creation, without the Default experiment
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
