"""Which worker trains which configuration: one row per configuration, claimed by an INSERT.

Workers on many machines share a grid through the database given as `storage` (the same
one Optuna uses). A primary key on (study, key) makes the claim atomic on SQLite and
PostgreSQL alike, so no configuration is trained twice. (Optuna's own trial queue reads a
trial's state, then updates it; SQLite ignores the row lock Optuna asks for, so two workers
could pop the same queued trial.)

A claim is `running`, `done` or `failed`. A later launch of the same sweep takes over a
`failed` claim, and a `running` one whose worker stopped beating for `stale_seconds`. A
worker beats on time, from a thread, every `stale_seconds / 5` while it trains (`beating`):
beating once per epoch, an epoch longer than `stale_seconds` (Food-101 on a CPU) made a
live worker look dead, its configuration trained twice and the next phase began early.

A claim can still be lost: a database outage longer than the stale window lets another worker
take it over. Every beat and the finish check that they changed this worker's row; a beat that
changes none, or beats that keep failing for the stale window, set `Heartbeat.lost`, and the
sweep stops that child (sweep/pruning.py ClaimWatch) rather than train the configuration twice.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

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
CREATE_ATTEMPTS = 5  # workers started together race to create the table, as they do Optuna's
POLL_SECONDS = 5  # how often a waiting worker looks at the other workers' claims


@dataclass
class Heartbeat:
    """What the beating thread found: `lost` is set (and `reason` says why) once the claim is
    no longer this worker's, or cannot be shown to be."""

    key: str
    lost: threading.Event = field(default_factory=threading.Event)
    reason: str = ""

    def lose(self, reason: str) -> None:
        self.reason = reason
        self.lost.set()
        print(f"sweep: {reason}", file=sys.stderr, flush=True)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000)}"


def _create_table(engine) -> None:
    """CREATE TABLE once, whoever wins: the losers of a race see it on their next look."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            _METADATA.create_all(engine, checkfirst=True)
            return
        except sa.exc.SQLAlchemyError:  # "already exists", or a duplicate key in PostgreSQL's pg_type
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


class Claims:
    """Claims in a database (shared by workers) or, with `url=None`, in this process only."""

    def __init__(self, study: str, url: str | None, stale_seconds: float = 900, beat_seconds: float | None = None):
        self.study = study
        self.owner = worker_id()
        self.started = time.time()
        self.stale_seconds = stale_seconds
        self.beat_seconds = beat_seconds or stale_seconds / 5  # five beats may be lost before a claim looks dead
        self._local: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()
        self.engine = None
        if url:
            # A generous timeout: eight workers writing one SQLite file wait for each other.
            args = {"timeout": 60} if url.startswith("sqlite") else {}
            self.engine = sa.create_engine(url, connect_args=args)
            _create_table(self.engine)

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

    def finish(self, key: str, state: str) -> bool:
        """Mark this worker's claim done or failed; False when it is not this worker's any more."""
        return self._set(key, state)

    def beat(self, key: str) -> bool:
        """Tell other workers this claim is alive; False when another worker has taken it over
        (or it is finished: a finished claim stays finished)."""
        return self._set(key, RUNNING, only_running=True)

    @contextlib.contextmanager
    def beating(self, key: str):
        """Beat for `key` every `beat_seconds` inside the block, however long an epoch takes;
        yields the `Heartbeat` whose `lost` says the claim went."""
        heartbeat, stop = Heartbeat(key), threading.Event()
        thread = threading.Thread(target=self._beat_until, args=(heartbeat, stop), name=f"claim-heartbeat-{key}", daemon=True)
        thread.start()
        try:
            yield heartbeat
        finally:
            stop.set()
            thread.join(timeout=30)

    def _beat_until(self, heartbeat: Heartbeat, stop: threading.Event) -> None:
        """A failed beat is retried, and said each time; failures for a whole stale window mean
        another worker may have taken the claim over, so it counts as lost."""
        last_beat = time.monotonic()
        while not stop.wait(self.beat_seconds):
            try:
                alive = self.beat(heartbeat.key)
            except Exception as error:  # noqa: BLE001 - a database hiccup must not end training at once; the next beat retries
                silent = time.monotonic() - last_beat
                if silent > self.stale_seconds:
                    heartbeat.lose(f"claim {heartbeat.key}: no heartbeat for {silent:.0f} s ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                                   "another worker may have taken it over, so this child stops")
                    return
                print(f"sweep: heartbeat for claim {heartbeat.key} failed ({type(error).__name__}), {silent:.0f} s without one "
                      f"(lost after {self.stale_seconds:.0f} s); retrying", file=sys.stderr, flush=True)
                continue
            if not alive:
                heartbeat.lose(f"claim {heartbeat.key} was taken over by another worker (this one's heartbeat was missing for over {self.stale_seconds:.0f} s); this child stops")
                return
            last_beat = time.monotonic()

    def _set(self, key: str, state: str, only_running: bool = False) -> bool:
        now = time.time()
        if self.engine is None:
            with self._lock:
                if only_running and self._local.get(key, ("", RUNNING))[1] != RUNNING:
                    return False
                self._local[key] = (self.owner, state, now)
                return True
        where = (CLAIMS.c.study == self.study) & (CLAIMS.c.key == key) & (CLAIMS.c.owner == self.owner)
        if only_running:
            where = where & (CLAIMS.c.state == RUNNING)
        with self.engine.begin() as connection:
            return connection.execute(CLAIMS.update().where(where).values(state=state, updated=now)).rowcount == 1

    def states(self, keys) -> dict[str, str]:
        """The state of each key that someone claimed (unclaimed keys are absent)."""
        keys = list(keys)
        if self.engine is None:
            return {key: self._local[key][1] for key in keys if key in self._local}
        with self.engine.begin() as connection:
            rows = connection.execute(sa.select(CLAIMS.c.key, CLAIMS.c.state, CLAIMS.c.updated).where((CLAIMS.c.study == self.study) & CLAIMS.c.key.in_(keys)))
            now = time.time()
            return {row.key: (FAILED if row.state == RUNNING and now - row.updated > self.stale_seconds else row.state) for row in rows}

    def wait_for(self, keys, what: str, timeout: float) -> None:
        """Block until no worker holds a `running` claim on any of `keys` (a stale one counts as failed)."""
        from train.config import ConfigError

        deadline = time.monotonic() + timeout
        announced = False
        while True:
            running = [key for key, state in self.states(keys).items() if state not in (DONE, FAILED)]
            if not running:
                return
            if not announced:
                print(f"sweep: waiting for {len(running)} run(s) of {what} on other workers", flush=True)
                announced = True
            if time.monotonic() > deadline:
                raise ConfigError(f"{what} still has {len(running)} run(s) on other workers after {timeout:.0f} s")
            time.sleep(POLL_SECONDS)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
