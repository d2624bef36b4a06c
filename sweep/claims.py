"""Which worker trains which configuration: one row per configuration, claimed by an INSERT.

Workers on many machines share a grid through the database given as `storage` (the same
one Optuna uses). A primary key on (study, key) makes the claim atomic on SQLite and
PostgreSQL alike, so no configuration is trained twice. (Optuna's own trial queue reads a
trial's state, then updates it; SQLite ignores the row lock Optuna asks for, so two workers
could pop the same queued trial.)

A claim is `running`, `done` or `failed`. A later launch of the same sweep takes over a
`failed` claim, and a `running` one whose worker stopped beating for `stale_seconds`.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import sqlalchemy as sa

_METADATA = sa.MetaData()
CLAIMS = sa.Table(
    "lrlab_sweep_claims",
    _METADATA,
    sa.Column("study", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)
RUNNING, DONE, FAILED = "running", "done", "failed"


def redact_url(url: str) -> str:
    """A database URL without its password, fit for a param or a message."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000)}"


class Claims:
    """Claims in a database (shared by workers) or, with `url=None`, in this process only."""

    def __init__(self, study: str, url: str | None, stale_seconds: float = 900):
        self.study = study
        self.owner = worker_id()
        self.started = time.time()
        self.stale_seconds = stale_seconds
        self._local: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()
        self.engine = None
        if url:
            # A generous timeout: eight workers writing one SQLite file wait for each other.
            args = {"timeout": 60} if url.startswith("sqlite") else {}
            self.engine = sa.create_engine(url, connect_args=args)
            _METADATA.create_all(self.engine, checkfirst=True)

    def claim(self, key: str) -> bool:
        """True when this worker now owns `key` and should train it."""
        now = time.time()
        if self.engine is None:
            with self._lock:
                row = self._local.get(key)
                if row is None or self._can_take(row[1], row[2], now):
                    self._local[key] = (self.owner, RUNNING, now)
                    return True
                return False
        try:
            with self.engine.begin() as connection:
                connection.execute(CLAIMS.insert().values(study=self.study, key=key, owner=self.owner, state=RUNNING, updated=now))
            return True
        except sa.exc.IntegrityError:
            return self._take_over(key, now)

    def _can_take(self, state: str, updated: float, now: float) -> bool:
        if state == FAILED:
            return updated < self.started  # failed in an earlier launch: try again; in this one: leave it
        return state == RUNNING and now - updated > self.stale_seconds

    def _take_over(self, key: str, now: float) -> bool:
        where = (CLAIMS.c.study == self.study) & (CLAIMS.c.key == key)
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(CLAIMS.c.owner, CLAIMS.c.state, CLAIMS.c.updated).where(where)).first()
        if row is None or not self._can_take(row.state, row.updated, now):
            return False
        # Only one worker's UPDATE matches the row it read: the others change nothing.
        with self.engine.begin() as connection:
            taken = connection.execute(
                CLAIMS.update()
                .where(where & (CLAIMS.c.owner == row.owner) & (CLAIMS.c.state == row.state) & (CLAIMS.c.updated == row.updated))
                .values(owner=self.owner, state=RUNNING, updated=now)
            )
        return taken.rowcount == 1

    def finish(self, key: str, state: str) -> None:
        self._set(key, state)

    def beat(self, key: str) -> None:
        """Tell other workers this claim is alive (called once per epoch)."""
        self._set(key, RUNNING)

    def _set(self, key: str, state: str) -> None:
        now = time.time()
        if self.engine is None:
            with self._lock:
                self._local[key] = (self.owner, state, now)
            return
        with self.engine.begin() as connection:
            connection.execute(
                CLAIMS.update()
                .where((CLAIMS.c.study == self.study) & (CLAIMS.c.key == key) & (CLAIMS.c.owner == self.owner))
                .values(state=state, updated=now)
            )

    def states(self, keys) -> dict[str, str]:
        """The state of each key that someone claimed (unclaimed keys are absent)."""
        keys = list(keys)
        if self.engine is None:
            return {key: self._local[key][1] for key in keys if key in self._local}
        with self.engine.begin() as connection:
            rows = connection.execute(sa.select(CLAIMS.c.key, CLAIMS.c.state, CLAIMS.c.updated).where((CLAIMS.c.study == self.study) & CLAIMS.c.key.in_(keys)))
            now = time.time()
            return {row.key: (FAILED if row.state == RUNNING and now - row.updated > self.stale_seconds else row.state) for row in rows}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
