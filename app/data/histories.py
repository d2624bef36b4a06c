"""Metric histories from MLflow into one long pandas frame (`app.data.history_cache` keeps them).

Every history in bulk: over HTTP with MLflow's bulk history endpoints (100 runs per call, one
call per metric; `MlflowClient` has no wrapper for them), on a database store with one SQL query
for all runs and metrics. Never one `get_metric_history` call per run and metric; `start_step`
reads a running run from the last step it had.

Nothing here imports Streamlit: the page, the report command and the benchmark share it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from mlflow.tracking import MlflowClient

from train import contract
from train.tracking import mlflow_private

# Contract names this module uses often, bound once.
LR_FIND_LOSS = contract.LR_FIND_LOSS
LR_FIND_LR = contract.LR_FIND_LR
SUGGESTED_LR = contract.SUGGESTED_LR
# Logged once per run: read from the run search, never as histories.
SINGLE_VALUE_METRICS = (*contract.SUMMARY_METRICS, *contract.DATA_METRICS, SUGGESTED_LR)
# Whole histories of up to 100 runs, one SQL query on the server (the MLflow UI's own call).
BULK_ENDPOINT = mlflow_private.BULK_HISTORY_ENDPOINT
BULK_MAX_POINTS = 25_000  # the server cuts an answer there; a full answer is asked again in halves
# The REST API's bulk call: per-run sampled on the server, and it can start at a step.
INTERVAL_ENDPOINT = mlflow_private.BULK_INTERVAL_ENDPOINT
BULK_MAX_RUNS = 100  # both refuse more run ids in one call
BULK_MAX_STEPS = 2500  # the interval call's cap per run; longer histories come back evenly sampled
BULK_WORKERS = 4  # concurrent HTTP calls; `mlflow server` answers them in parallel
INT32_MAX = 2**31 - 1  # end_step is an int32 in MLflow's protobuf
SQL_CHUNK = 500  # run ids per SQL `IN (...)`, below SQLite's variable limit
HTTP_TIMEOUT_SECONDS = 60
HISTORY_COLUMNS = ["run_id", "key", "step", "value", "timestamp"]


def _store(client: MlflowClient):
    return mlflow_private.tracking_store(client)


def fetch_history(client: MlflowClient, run_ids: list[str], keys: list[str], start_step: int | None = None) -> pd.DataFrame:
    """Every value of `keys` logged by `run_ids` (from `start_step` on): run_id, key, step, value, timestamp."""
    run_ids, keys = list(dict.fromkeys(run_ids)), list(dict.fromkeys(keys))
    if not run_ids or not keys:
        return empty_history()
    store = _store(client)
    if mlflow_private.is_rest_store(store):
        frame = _fetch_rest(store, run_ids, keys, start_step)
    elif mlflow_private.is_sql_store(store):
        frame = _fetch_sql(store, run_ids, keys, start_step)
    else:
        frame = _fetch_generic(store, run_ids, keys, start_step)
    return clean_history(frame)


def empty_history() -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": pd.Series(dtype=str),
        "key": pd.Series(dtype=str),
        "step": pd.Series(dtype="int64"),
        "value": pd.Series(dtype=float),
        "timestamp": pd.Series(dtype="int64"),
    })


def clean_history(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return empty_history()
    frame = frame[HISTORY_COLUMNS].copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    frame["step"] = pd.to_numeric(frame["step"], errors="coerce").fillna(0).astype("int64")
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce").fillna(0).astype("int64")
    # A value logged twice at one step (a resumed run) counts once: the latest.
    frame = frame.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
    return frame.drop_duplicates(["run_id", "key", "step"], keep="last").reset_index(drop=True)


def _fetch_rest(store, run_ids, keys, start_step) -> pd.DataFrame:
    """Histories over HTTP, one call per metric and batch of runs, a few calls in flight.

    Whole histories come from the bulk endpoint (one SQL query per call on the server); reads
    from a step, and servers without that endpoint, use the REST API's bulk-interval endpoint.
    """
    creds = store.get_host_creds()
    calls = [(key, run_ids[i : i + BULK_MAX_RUNS]) for key in keys for i in range(0, len(run_ids), BULK_MAX_RUNS)]
    read = _interval_reader(creds, start_step) if start_step is not None else _bulk_reader(creds)
    # Every call in flight at once, the first too (it used to go alone, to learn whether the server
    # has the bulk endpoint: one call's wait more on every first chart); a server without it
    # answers 404 to each, and they are all asked again of the interval endpoint.
    with ThreadPoolExecutor(max_workers=min(BULK_WORKERS, len(calls))) as pool:
        try:
            results = list(pool.map(read, calls))
        except _EndpointMissing:
            results = list(pool.map(_interval_reader(creds, None), calls))
    return pd.DataFrame([row for rows in results for row in rows], columns=HISTORY_COLUMNS)


class _EndpointMissing(Exception):
    pass


def _get(creds, endpoint: str, params: dict) -> list[dict]:
    missing = _EndpointMissing if endpoint == BULK_ENDPOINT else None
    response = mlflow_private.rest_request(creds, endpoint, "GET", when_missing=missing, params=params, max_retries=1, timeout=HTTP_TIMEOUT_SECONDS)
    return response.json().get("metrics", [])


def _bulk_reader(creds):
    def read(key_and_batch) -> list[dict]:
        key, batch = key_and_batch
        rows = _get(creds, BULK_ENDPOINT, {"run_id": batch, "metric_key": key, "max_results": BULK_MAX_POINTS})
        if len(rows) < BULK_MAX_POINTS:
            return rows
        if len(batch) == 1:  # over 25,000 values in one run: take the server's even sample
            return _interval_reader(creds, None)((key, batch))
        half = len(batch) // 2  # the answer was cut at the server's limit: ask in halves
        return read((key, batch[:half])) + read((key, batch[half:]))

    return read


def _interval_reader(creds, start_step):
    def read(key_and_batch) -> list[dict]:
        key, batch = key_and_batch
        params = {"run_ids": batch, "metric_key": key, "max_results": BULK_MAX_STEPS}
        if start_step is not None:
            params.update(start_step=max(0, int(start_step)), end_step=INT32_MAX)
        return _get(creds, INTERVAL_ENDPOINT, params)

    return read


def _fetch_sql(store, run_ids, keys, start_step) -> pd.DataFrame:
    metrics = mlflow_private.sql_metric_table()  # the ORM class of the metrics table

    parts = []
    with mlflow_private.sql_session(store) as session:
        for i in range(0, len(run_ids), SQL_CHUNK):
            query = session.query(
                metrics.run_uuid.label("run_id"), metrics.key, metrics.step, metrics.value, metrics.timestamp, metrics.is_nan
            ).filter(metrics.run_uuid.in_(run_ids[i : i + SQL_CHUNK]), metrics.key.in_(keys))
            if start_step is not None:
                query = query.filter(metrics.step >= int(start_step))
            parts.append(_read_frame(session, query.statement))
    frame = pd.concat(parts, ignore_index=True)
    if not frame.empty:
        frame.loc[frame["is_nan"].astype(bool), "value"] = math.nan
    return frame


def _read_frame(session, statement) -> pd.DataFrame:
    """Rows straight into pandas: building 100,000s of SQLAlchemy rows costs more than the query."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return pd.read_sql(statement, connection)
    sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
        columns = [column[0] for column in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)
    finally:
        cursor.close()


def _fetch_generic(store, run_ids, keys, start_step) -> pd.DataFrame:
    rows = []
    for key in keys:
        for i in range(0, len(run_ids), BULK_MAX_RUNS):
            batch = run_ids[i : i + BULK_MAX_RUNS]
            sampled = store.get_metric_history_bulk_interval(
                run_ids=batch, metric_key=key, max_results=BULK_MAX_STEPS,
                start_step=None if start_step is None else int(start_step),
                end_step=None if start_step is None else INT32_MAX,
            )  # fmt: skip
            rows += [(m.run_id, m.key, m.step, m.value, m.timestamp) for m in sampled]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def history_keys(runs: pd.DataFrame) -> list[str]:
    """The metric keys worth a history: every key the runs logged except the single-value ones."""
    keys = {key for keys in runs["metric_keys"] for key in keys} - set(SINGLE_VALUE_METRICS)
    ordered = [key for key in (*contract.EPOCH_METRICS, LR_FIND_LOSS, LR_FIND_LR) if key in keys]
    return ordered + sorted(keys - set(ordered))
