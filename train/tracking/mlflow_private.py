"""Every use of MLflow's private API and undocumented endpoints, in one place, each with why.

lrlab pins mlflow==3.17.2. What follows is not MLflow's public API, so an upgrade may move or
change it without a deprecation. Each entry says what it saves (measured on 2 CPU cores) and
the public alternative to fall back to. `check()` verifies that the installed MLflow still has
every one; tests/test_mlflow_private.py runs it, so an upgrade that breaks one fails loudly,
naming this module, instead of silently at a user's.

Nothing here is imported by the page's first screen unless it is used: MLflow's SQL store costs
a second to import and a client over HTTP never needs it.
"""

from __future__ import annotations

import contextlib
import os
import sys

# The UI's bulk history call: whole histories of up to 100 runs for one metric, one SQL query on
# the server. Saves one REST call per run and metric (200 runs x 7 metrics: 1,400 calls -> 14).
# Public alternative: INTERVAL_ENDPOINT below (sampled per run) or MlflowClient.get_metric_history.
BULK_HISTORY_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
# The REST API's bulk call, documented in MLflow's protobuf but with no MlflowClient wrapper.
BULK_INTERVAL_ENDPOINT = "/api/2.0/mlflow/metrics/get-history-bulk-interval"


def rest_request(creds, endpoint: str, method: str, *, when_missing: type[Exception] | None = None, **kwargs):
    """A request to a tracking server as MlflowClient makes it: MLflow's `http_request` (credentials
    from MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN and auth plugins, TLS settings,
    retries), then `verify_rest_response` (a refusal or server error raised as the client raises
    it). The run search reads the public REST answer (`POST /api/2.0/mlflow/runs/search`) as JSON
    through it: 1,000 runs 0.8 s sooner than MlflowClient's protobuf and entities
    (app/data/run_search.py). `creds` is a RestStore's `get_host_creds()` (set per instance:
    tests/test_app_run_search.py uses it on a real server). Public alternative: MlflowClient.search_runs.
    The page's history reads go through it too (app/data/histories.py); `when_missing` is raised for a
    404, a server without that endpoint, instead of MLflow's error."""
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    response = http_request(creds, endpoint, method, **kwargs)
    if when_missing is not None and response.status_code == 404:
        raise when_missing(endpoint)
    verify_rest_response(response, endpoint)
    return response


def tracking_store(client):
    """The store behind an MlflowClient. MlflowClient exposes neither its store nor a bulk
    history call; both live one level down. Public alternative: one get_metric_history per run."""
    return client._tracking_client.store


def is_rest_store(store) -> bool:
    from mlflow.store.tracking.rest_store import RestStore

    return isinstance(store, RestStore)


def is_sql_store(store) -> bool:
    """Without importing the SQL store (a second): a store that is one has loaded it already."""
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    return module is not None and isinstance(store, module.SqlAlchemyStore)


def sql_metric_table():
    """MLflow's ORM class for the metrics table: every history in one SQL query (200 runs x 100
    epochs x 7 metrics: 0.3 s, against 1,400 calls). Public alternative: get_metric_history per run."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    return SqlMetric


def sql_session(store):
    """A session on a SQL store's database, closed (and rolled back on error) by the store."""
    return store.ManagedSessionMaker()


def create_tables(engine) -> None:
    """MLflow's own schema on an empty database, without the Default experiment, so a new SQLite
    store can start as a copy of it (milliseconds instead of 6-9 s of migrations). Public
    alternative: let MlflowClient create the store (slow, and racy between processes)."""
    from mlflow.store.db import utils as db_utils

    db_utils._initialize_tables(engine)


def schema_head() -> str:
    """The alembic revision of this MLflow's newest schema: a SQLite store whose alembic_version
    holds it is complete, and MLflow opens it without migrating (train.tracking.store waits for a
    store another process is creating rather than migrate it twice). Public alternative: none
    short of opening the store, which creates or migrates it."""
    from mlflow.store.db import utils as db_utils

    return db_utils._get_latest_schema_revision()


def forget_active_run() -> None:
    """Drop the active run from MLflow's fluent stack without telling the store, which is down:
    `mlflow.end_run` would retry it and leave the run active, and `with start_run()` would then
    end it FAILED, retrying again. The run's end goes to a file for train.tracking.upload instead.
    Public alternative: none (end_run needs the store)."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    if stack:
        stack.pop()


def validate_model_name(name: str) -> None:
    """The registry's own rule for a model name (raises MlflowException), checked before the
    first epoch rather than at registration after training. Public alternative: register and fail."""
    from mlflow.utils.validation import _validate_model_name

    _validate_model_name(name)


@contextlib.contextmanager
def keras_log_model_fixes():
    """Three changes to MLflow 3.17.2's Keras flavor, for the length of a `mlflow.keras.log_model` call:
    - it writes input_example.json before it creates the model folder, so any input example fails
      with FileNotFoundError: the folder is created first;
    - it loads the model it just saved and predicts the example to "validate the serving input":
      5-10 s a run, and a failure there is only a logged warning. It is skipped; the tests serve a
      logged model for real and check that pyfunc predicts the logged example like Keras;
    - it checks the given pip requirements against the installed packages, to warn of a mismatch,
      by mapping every installed distribution to its modules first: 3 s a run on 2 cores. lrlab's
      requirements are the installed versions of mlflow, keras and tensorflow, so it is skipped.
    Public alternative: log without an input example (the model page then shows none), and pay
    the requirements check."""
    import mlflow.keras.save as keras_save
    import mlflow.models.utils as model_utils
    import mlflow.utils.environment as environment

    original_save_example, original_validate = keras_save._save_example, model_utils._validate_serving_input
    original_requirements_check = environment.warn_dependency_requirement_mismatches

    def save_example_into_new_folder(mlflow_model, example, path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        return original_save_example(mlflow_model, example, path, *args, **kwargs)

    keras_save._save_example = save_example_into_new_folder
    model_utils._validate_serving_input = lambda model_uri, serving_input: None
    environment.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        keras_save._save_example, model_utils._validate_serving_input = original_save_example, original_validate
        environment.warn_dependency_requirement_mismatches = original_requirements_check


def load_project(path: str):
    """An MLproject file parsed as `mlflow run` parses it (its entry points, parameters, commands).
    Public alternative: yaml.safe_load and MLflow's documented format."""
    from mlflow.projects._project_spec import load_project as load

    return load(path)


def check() -> list[str]:
    """What the installed MLflow no longer has, of everything above; empty when all is there."""
    import importlib

    needs = [
        ("mlflow.tracking.client", "MlflowClient", "_tracking_client"),
        ("mlflow.store.tracking.rest_store", "RestStore", "get_metric_history_bulk_interval"),
        ("mlflow.utils.rest_utils", "http_request", None),
        ("mlflow.utils.rest_utils", "verify_rest_response", None),
        ("mlflow.store.tracking.sqlalchemy_store", "SqlAlchemyStore", None),  # ManagedSessionMaker: per instance, tested on a real store
        ("mlflow.store.tracking.dbmodels.models", "SqlMetric", "run_uuid"),
        ("mlflow.store.db.utils", "_initialize_tables", None),
        ("mlflow.store.db.utils", "_get_latest_schema_revision", None),
        ("mlflow.tracking.fluent", "_active_run_stack", "get"),
        ("mlflow.utils.validation", "_validate_model_name", None),
        ("mlflow.keras.save", "_save_example", None),
        ("mlflow.models.utils", "_validate_serving_input", None),
        ("mlflow.utils.environment", "warn_dependency_requirement_mismatches", None),
        ("mlflow.projects._project_spec", "load_project", None),
    ]
    missing = []
    for module_name, name, attribute in needs:
        try:
            thing = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            missing.append(f"{module_name}.{name}")
            continue
        if attribute == "_tracking_client":
            continue  # an instance attribute: checked on a real client by the test
        if attribute and not hasattr(thing, attribute):
            missing.append(f"{module_name}.{name}.{attribute}")
    return missing
