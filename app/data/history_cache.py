"""The metric histories a dashboard process has read, kept by run (`HistoryCache`): finished runs
are read once, running ones from their last step; one cache per store, shared by every session
and the warm-up (`shared_history_cache`). Reads go through `app.data.histories`.

Nothing here imports Streamlit: the page, the report command and the benchmark share it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import pandas as pd
from mlflow.tracking import MlflowClient

from app.data.histories import clean_history, empty_history, fetch_history, history_keys
from app.data.run_search import ACTIVE_STATUSES


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
        return pd.concat(frames, ignore_index=True) if frames else empty_history()

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
        fetched_full = fetch_history(client, full, keys) if full else empty_history()
        fetched_new = fetch_history(client, incremental, keys, start_step=min(starts)) if incremental else empty_history()
        for run_id, part in _by_run(fetched_full, full):
            self.entries[run_id] = _Entry(part, status[run_id], end_time[run_id], own_keys[run_id])
        for run_id, part in _by_run(fetched_new, incremental):
            old = self.entries[run_id]
            merged = clean_history(pd.concat([old.frame, part], ignore_index=True)) if not part.empty else old.frame
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
        return pd.concat(frames, ignore_index=True) if frames else empty_history()

    def _extend(self, client: MlflowClient, run_ids: list[str], own_keys: dict[str, frozenset]) -> int:
        """Read the keys finished runs lack in the cache (one bulk read for all of them) and add them;
        the points read."""
        if not run_ids:
            return 0
        missing = sorted(set().union(*(own_keys[r] - self.entries[r].keys for r in run_ids)))
        fetched = fetch_history(client, run_ids, missing)
        for run_id, part in _by_run(fetched, run_ids):
            old = self.entries[run_id]
            merged = clean_history(pd.concat([old.frame, part], ignore_index=True)) if not part.empty else old.frame
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
        yield run_id, (part.reset_index(drop=True) if part is not None else empty_history())
