"""The tracking store: connecting, checking it in seconds before a run, and bounding every call to it.

A store that is down, refused or not a database is one line before TensorFlow loads; while
training, every call to a server has a timeout and few retries (TRAINING_HTTP_LIMITS).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.tracking import MlflowClient

from train import contract
from train.config import ConfigError
from train.errors import TrainingError
from train.messages import (
    HEALTH_TIMEOUT_SECONDS,
    database_down,
    first_line,
    redact_uri,
    refusal,
    server_down,
    unreachable,
)

_OTHER_SCHEMES = ("file", "databricks", "databricks-uc", "uc")  # what MLflow 3.17 opens besides servers and databases
# The one timeout of the one reachability check (check_store): a server's /health, a database's
# connection, the first API call, a SQLite file's lock. Seconds, so a store that is down or
# hangs is one line at once instead of MLflow's minutes of retries.
STORE_TIMEOUT_SECONDS = HEALTH_TIMEOUT_SECONDS
CREATION_PATIENCE_SECONDS = 60  # how long a writer or reader waits for another process creating a new SQLite store


# MLflow draws a progress bar for every artifact download (a model, a checkpoint, class names): a sweep
# printed ~34 of them between its lines. Off in every lrlab process unless the user exported it.
QUIET_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def connect(experiment: str = "") -> str:
    """Point MLflow at the tracking store after checking it answers; return the URI."""
    uri = contract.tracking_uri()
    bound_http_requests()
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
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
    """Create a new SQLite store's tables under a file lock, or wait for another process's creation.

    MLflow creates the tables on first use; two processes doing that at once on a new file
    (a sweep, a test, 8 jobs launched together, `mlflow run` beside a reader) fail with
    'table already exists' or alembic's 'Online migration expected to match one row'. Writers
    here take the lock and put a complete store in place in one rename; a store some other
    process (`mlflow run` itself) is creating is waited for, never migrated a second time.
    """
    import fcntl

    database = sqlite_path(uri)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists() or _stays_empty(database):
            _copy_empty_store(database)
        _wait_until_complete(uri, database)
        MlflowClient(uri).search_experiments(max_results=1)  # adds the Default experiment, under the lock


def sqlite_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///")).expanduser()


def _stays_empty(database: Path, seconds: float = 1.0) -> bool:
    """A zero-byte file that is still empty after a second: nobody is creating it (SQLite makes
    the file at connect and writes the schema at once), so it is ours to fill."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if database.stat().st_size:
            return False
        time.sleep(0.1)
    return database.stat().st_size == 0


def store_complete(database: Path) -> bool:
    """Whether the SQLite file holds MLflow's whole schema (its alembic version is this MLflow's head).
    Read-only and without MLflow's store, so asking never creates or migrates anything."""
    import sqlite3

    from train.tracking import mlflow_private

    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=STORE_TIMEOUT_SECONDS)) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return [row[0] for row in rows] == [mlflow_private.schema_head()]


def _wait_until_complete(uri: str, database: Path) -> None:
    """Wait (bounded) while another process creates the store; one line if it never completes."""
    deadline = time.monotonic() + CREATION_PATIENCE_SECONDS
    while not store_complete(database):
        if time.monotonic() >= deadline:
            raise ConfigError(f"tracking store {uri}: '{database}' is not a complete MLflow store after {CREATION_PATIENCE_SECONDS} s "
                              "(another process was creating it, or an older MLflow made it: `mlflow db upgrade`); "
                              "move it away or set MLFLOW_TRACKING_URI to a new file")
        time.sleep(0.25)


def _copy_empty_store(database: Path) -> None:
    """Start a new SQLite store as a copy of an empty one made once per MLflow version.

    MLflow builds a new store by creating its first schema and replaying every migration
    since (6-9 s); a copy takes milliseconds. The copy holds the tables only: MLflow then
    adds the Default experiment itself, with this store's own artifact location. The copy is
    renamed into place whole, so a reader never sees half a store. Anything unexpected here
    leaves the store to MLflow's own (slow) creation.
    """
    import shutil

    import sqlalchemy

    from train.config import cache_root
    from train.tracking import mlflow_private

    template = cache_root() / "stores" / f"empty-mlflow-{mlflow.__version__}.db"
    partial = template.with_name(f"{template.name}.{os.getpid()}.partial")
    copy = database.with_name(f".{database.name}.{os.getpid()}.partial")
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
            try:
                mlflow_private.create_tables(engine)  # MLflow's own creation, without the Default experiment
            finally:
                engine.dispose()
            os.replace(partial, template)  # whole or not at all, for processes that start together
        shutil.copyfile(template, copy)
        os.replace(copy, database)
    except Exception:  # noqa: BLE001 - a faster start is not worth a failed one
        partial.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)


def require_existing_store(uri: str | None = None) -> str:
    """For readers (stale, upload, the dashboard, the report): the store exists and answers; return its URI.

    A reader never creates or migrates a store: a SQLite file that does not exist (yet), or is
    not a complete MLflow store, is one ConfigError line, as is a server or database that does not
    answer within STORE_TIMEOUT_SECONDS. Readers then open it with READER_HTTP_LIMITS."""
    uri = uri or contract.tracking_uri()
    if uri.startswith("sqlite:///"):
        database = sqlite_path(uri).resolve()
        if not database.is_file() or database.stat().st_size == 0:
            raise ConfigError(f"tracking store {uri} does not exist ('{database}' holds no store); "
                              "train a run first, or set MLFLOW_TRACKING_URI to the store that holds your runs")
        _check_sqlite_file(uri, database)
        if not store_complete(database):
            _wait_until_complete(uri, database)  # being created by a writer right now: seconds
        return uri
    check_store(uri)
    return uri


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
    """One connection with STORE_TIMEOUT_SECONDS: MLflow retries a database that is down 10 times
    over ~100 s, logging each attempt, and a host that drops packets waits for the TCP timeout."""
    reason = database_down(uri, STORE_TIMEOUT_SECONDS)
    if reason is not None:
        raise ConfigError(unreachable(uri, reason))


def _check_sqlite(uri: str) -> None:
    database = sqlite_path(uri).resolve()
    folder = database.parent
    if not folder.is_dir():
        raise ConfigError(f"tracking store {uri}: folder '{folder}' does not exist; create it or set MLFLOW_TRACKING_URI")
    _check_sqlite_file(uri, database)
    # SQLite writes a journal beside the database (and the table-creation lock lives there too).
    if not _can_write_in(folder) or (database.exists() and not os.access(database, os.W_OK)):
        raise ConfigError(f"tracking store {uri}: '{database}' or its folder is read-only (SQLite writes a journal beside the database); use a writable folder, e.g. MLFLOW_TRACKING_URI=sqlite:///$HOME/mlflow.db")


def _check_sqlite_file(uri: str, database: Path) -> None:
    """A file that is there must be an SQLite database (a text file given as a store is one line)."""
    if database.is_dir():
        raise ConfigError(f"tracking store {uri}: '{database}' is a folder, not an SQLite database; set MLFLOW_TRACKING_URI to a file")
    if database.is_file() and database.stat().st_size:
        with open(database, "rb") as file:
            if file.read(16) != b"SQLite format 3\x00":
                raise ConfigError(f"tracking store {uri}: '{database}' is not an SQLite database; move it away or set MLFLOW_TRACKING_URI to a new file")


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
# These are every HTTP limit lrlab sets; nothing else writes MLFLOW_HTTP_REQUEST_*.
TRAINING_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
# The first API call at start, once /health answered within STORE_TIMEOUT_SECONDS: seconds, not
# minutes, but long enough for a basic-auth server to check a password (a slow hash by design:
# at load 10 on 2 cores it took over 5 s, and three trainings failed their start check).
PROBE_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
# An epoch's metrics: a failed send is queued (train.tracking.metric_buffer) and retried with the next epoch.
EPOCH_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
# Short tools that read (stale, upload, the dashboard, the report): a hung server is an error in
# seconds, not 7 retries of 120 s.
READER_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "15", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
# What the user exported before lrlab started; our own values, inherited by a child process
# (a test, a sweep worker), do not count.
_USER_HTTP_LIMITS = {key for key, ours in TRAINING_HTTP_LIMITS.items() if os.environ.get(key) not in (None, ours)}


def bound_http_requests(limits: dict[str, str] = TRAINING_HTTP_LIMITS) -> None:
    """Apply `limits` for the rest of the process (MLflow reads them per request)."""
    for key, value in limits.items():
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
