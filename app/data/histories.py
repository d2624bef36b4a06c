"""Metric histories from MLflow into one long pandas frame, and the cache that keeps them.

Every history in bulk: over HTTP with MLflow's bulk history endpoints (100 runs per call, one
call per metric; `MlflowClient` has no wrapper for them), on a database store with one SQL query
for all runs and metrics. Never one `get_metric_history` call per run and metric. Finished runs
are cached for the life of the process (`HistoryCache`); running ones are re-read from the last
step they had.

Nothing here imports Streamlit: the page, the report command and the benchmark share it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
from mlflow.tracking import MlflowClient

from app.data.run_search import ACTIVE_STATUSES
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
        return _empty_history()
    store = _store(client)
    if mlflow_private.is_rest_store(store):
        frame = _fetch_rest(store, run_ids, keys, start_step)
    elif mlflow_private.is_sql_store(store):
        frame = _fetch_sql(store, run_ids, keys, start_step)
    else:
        frame = _fetch_generic(store, run_ids, keys, start_step)
    return _clean_history(frame)


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": pd.Series(dtype=str),
        "key": pd.Series(dtype=str),
        "step": pd.Series(dtype="int64"),
        "value": pd.Series(dtype=float),
        "timestamp": pd.Series(dtype="int64"),
    })


def _clean_history(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return _empty_history()
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


@dataclass
class _Entry:
    frame: pd.DataFrame
    status: str
    end_time: float | None
    keys: frozenset


@dataclass
class LoadStats:
    """What the last `HistoryCache.load` read: runs served from the cache, read whole, read from their last step."""

    cached: int = 0
    full: int = 0
    incremental: int = 0
    extended: int = 0  # finished runs of which only keys not read before were read
    seconds: float = 0.0
    points: int = 0  # points read from the store

    def add(self, other: LoadStats) -> None:
        """Count `other` in: the reads of one page, made in several loads."""
        for name in ("cached", "full", "incremental", "extended", "seconds", "points"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# Points the shared cache keeps (about 60 bytes each in pandas: ~300 MB); beyond it the runs read
# longest ago go first. A team server's dashboard lives for weeks over a growing store.
CACHE_MAX_POINTS = 5_000_000


@dataclass
class HistoryCache:
    """Metric histories by run: finished runs are read once, running ones from their last step, a key
    not read yet alone. At most `max_points` points are kept, the runs least recently asked for
    evicted first (never those of the load in progress).

    Shared by every session of one dashboard process (see `shared_history_cache`), so it locks.
    """

    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    last: LoadStats = field(default_factory=LoadStats)
    max_points: int = CACHE_MAX_POINTS
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def points(self) -> int:
        return sum(len(entry.frame) for entry in self.entries.values())

    def load(self, client: MlflowClient, runs: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
        """Histories of `runs` (long: run_id, key, step, value, timestamp), reading only what changed.
        Loads take turns: a session that arrives while another (or the warm-up) reads the same
        runs waits and then finds them cached, rather than reading them a second time."""
        with self._lock:
            return self._load(client, runs, keys)

    def read(self, client: MlflowClient, runs: pd.DataFrame, keys: list[str] | None = None) -> tuple[pd.DataFrame, LoadStats]:
        """`load`, and what this load read (`last` may be another thread's by the time it is looked at)."""
        with self._lock:
            return self._load(client, runs, keys), self.last

    def peek(self, runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame | None:
        """The histories of `runs` from the cache alone, without waiting for a load in progress (the
        warm-up reading every key, say): None unless each run is cached, finished and unchanged, with
        every one of `keys` it logged."""
        frames = []
        for run_id, status, end, logged in zip(runs["run_id"], runs["status"], runs["end_time"], runs["metric_keys"], strict=True):
            if not frozenset(keys) & set(logged):
                continue  # nothing of it to read
            entry = self.entries.get(run_id)
            if entry is None or status in ACTIVE_STATUSES or (entry.status, entry.end_time) != (status, _ms(end)) or not frozenset(keys) & set(logged) <= entry.keys:
                return None
            frames.append(entry.frame[entry.frame["key"].isin(keys)])
        frames = [frame for frame in frames if not frame.empty]
        return pd.concat(frames, ignore_index=True) if frames else _empty_history()

    def _load(self, client: MlflowClient, runs: pd.DataFrame, keys: list[str] | None) -> pd.DataFrame:
        started = time.perf_counter()
        keys = keys if keys is not None else history_keys(runs)
        own_keys = {run_id: frozenset(keys) & set(logged) for run_id, logged in zip(runs["run_id"], runs["metric_keys"], strict=True)}
        status = dict(zip(runs["run_id"], runs["status"], strict=True))
        end_time = {run_id: _ms(value) for run_id, value in zip(runs["run_id"], runs["end_time"], strict=True)}
        stats, full, incremental, starts, extend = LoadStats(), [], [], [], []
        for run_id in runs["run_id"]:
            entry = self.entries.get(run_id)
            if not own_keys[run_id]:  # it logged none of the keys: nothing to read
                stats.cached += 1
                continue
            finished = entry is not None and entry.status not in ACTIVE_STATUSES and status[run_id] not in ACTIVE_STATUSES
            if finished and (entry.status, entry.end_time) == (status[run_id], end_time[run_id]) and not own_keys[run_id] <= entry.keys:
                extend.append(run_id)  # the first chart read a few keys of it; read the others alone
            elif entry is None or entry.frame.empty or not own_keys[run_id] <= entry.keys:
                full.append(run_id)
            elif entry.status in ACTIVE_STATUSES or status[run_id] in ACTIVE_STATUSES:
                incremental.append(run_id)
                starts.append(self._last_step(entry, own_keys[run_id]))
            elif entry.status != status[run_id] or entry.end_time != end_time[run_id]:
                full.append(run_id)
            else:
                stats.cached += 1
        fetched_full = fetch_history(client, full, keys) if full else _empty_history()
        fetched_new = fetch_history(client, incremental, keys, start_step=min(starts)) if incremental else _empty_history()
        for run_id, part in _by_run(fetched_full, full):
            self.entries[run_id] = _Entry(part, status[run_id], end_time[run_id], own_keys[run_id])
        for run_id, part in _by_run(fetched_new, incremental):
            old = self.entries[run_id]
            merged = _clean_history(pd.concat([old.frame, part], ignore_index=True)) if not part.empty else old.frame
            self.entries[run_id] = _Entry(merged, status[run_id], end_time[run_id], old.keys | own_keys[run_id])
        stats.points = len(fetched_full) + len(fetched_new) + self._extend(client, extend, own_keys)
        for run_id in runs["run_id"]:
            if run_id in self.entries:
                self.entries.move_to_end(run_id)
        self._evict(keep=set(runs["run_id"]))
        frames = [self.entries[run_id].frame for run_id in runs["run_id"] if run_id in self.entries]
        stats.full, stats.incremental, stats.extended = len(full), len(incremental), len(extend)
        stats.seconds = time.perf_counter() - started
        self.last = stats
        frames = [frame[frame["key"].isin(keys)] for frame in frames if not frame.empty]
        return pd.concat(frames, ignore_index=True) if frames else _empty_history()

    def _extend(self, client: MlflowClient, run_ids: list[str], own_keys: dict[str, frozenset]) -> int:
        """Read the keys finished runs lack in the cache (one bulk read for all of them) and add them;
        the points read."""
        if not run_ids:
            return 0
        missing = sorted(set().union(*(own_keys[r] - self.entries[r].keys for r in run_ids)))
        fetched = fetch_history(client, run_ids, missing)
        for run_id, part in _by_run(fetched, run_ids):
            old = self.entries[run_id]
            merged = _clean_history(pd.concat([old.frame, part], ignore_index=True)) if not part.empty else old.frame
            self.entries[run_id] = _Entry(merged, old.status, old.end_time, old.keys | own_keys[run_id])
        return len(fetched)

    def _evict(self, keep: set[str]) -> None:
        """Drop the runs asked for longest ago until at most `max_points` points are kept."""
        total = self.points
        for run_id in list(self.entries):
            if total <= self.max_points:
                break
            if run_id not in keep:
                total -= len(self.entries.pop(run_id).frame)

    @staticmethod
    def _last_step(entry: _Entry, keys) -> int:
        """The step to re-read from: the smallest last step over the run's keys (a key not seen yet: 0)."""
        last = entry.frame.groupby("key")["step"].max()
        return int(min((last.get(key, 0) for key in keys), default=0))


_SHARED: dict[str, HistoryCache] = {}
_SHARED_LOCK = threading.Lock()


def shared_history_cache(key: str) -> HistoryCache:
    """The history cache of one store and reader (`store_key`), one per process: every session
    of the dashboard and its warm-up (app/page/warmup.py) fill and read the same one."""
    with _SHARED_LOCK:
        return _SHARED.setdefault(key, HistoryCache())


def _ms(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _by_run(frame: pd.DataFrame, run_ids):
    groups = dict(tuple(frame.groupby("run_id", sort=False))) if not frame.empty else {}
    for run_id in run_ids:
        part = groups.get(run_id)
        yield run_id, (part.reset_index(drop=True) if part is not None else _empty_history())
