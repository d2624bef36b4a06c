"""Claims on configurations: heartbeats on time, and many workers at once on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from sweep.claims import DONE, RUNNING, Claims
from tests.conftest import REPO
from tests.servers import postgres_server


def test_a_worker_inside_one_long_epoch_stays_alive_and_a_dead_one_is_taken_over(tmp_path):
    """No epoch ends for 2 stale windows: the beat on time keeps the claim; after it stops, it goes.
    Ten beats a window, so a loaded machine that delays the beat thread by a second still keeps it."""
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    worker, other = Claims("s", url, stale_seconds=2.0, beat_seconds=0.2), Claims("s", url, stale_seconds=2.0)
    assert worker.claim("k")
    with worker.beating("k"):
        time.sleep(4.0)
        assert not other.claim("k"), "a live worker's claim was taken"
        assert other.states(["k"]) == {"k": RUNNING}
    worker.finish("k", DONE)
    time.sleep(0.5)
    assert other.states(["k"]) == {"k": DONE}, "a last beat must not revive a finished claim"
    assert worker.claim("j")
    time.sleep(2.5)  # the worker died: no more beats
    assert other.claim("j")
    worker.close(), other.close()


WORKER = textwrap.dedent("""
    import sys, time
    import sqlalchemy as sa
    from sweep.claims import Claims
    url, start = sys.argv[1], float(sys.argv[2])
    with sa.create_engine(url).connect():  # the database driver loaded before the start line
        pass
    time.sleep(max(0.0, start - time.time()))  # every worker creates the table at the same moment
    claims = Claims("race", url)
    print(" ".join(key for key in (f"k{i}" for i in range(40)) if claims.claim(key)))
""")


def race(url: str, workers: int = 8) -> list[list[str]]:
    start = time.time() + 4  # after every interpreter has imported SQLAlchemy
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(start)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]
    results = [process.communicate(timeout=120) for process in processes]
    failed = [err for (out, err), process in zip(results, processes, strict=True) if process.returncode != 0]
    assert not failed, failed[0][-2000:]
    return [out.split() for out, _ in results]


def assert_each_key_once(claimed: list[list[str]]) -> None:
    keys = [key for share in claimed for key in share]
    assert sorted(keys) == sorted(f"k{i}" for i in range(40)), "every configuration claimed exactly once"


def test_eight_workers_start_together_on_sqlite(tmp_path):
    assert_each_key_once(race(f"sqlite:///{tmp_path / 'claims.db'}"))


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as database:
        yield database


@pytest.mark.postgres
def test_eight_workers_start_together_on_postgresql(postgres):
    assert_each_key_once(race(postgres("claims")))


@pytest.mark.postgres
def test_a_worker_that_loses_the_race_to_create_the_table_goes_on(postgres):
    """The race, made certain: another worker's CREATE TABLE is not committed yet when this one
    looks, so this one's CREATE waits for it and then fails on PostgreSQL's unique index."""
    import threading

    import sqlalchemy as sa

    from sweep.claims import CLAIMS

    url = postgres("lost_race")
    engine = sa.create_engine(url)
    outcome = {}

    def second_worker():
        try:
            outcome["claims"] = Claims("lost", url)
        except Exception as error:  # noqa: BLE001 - the failure is what the test reports
            outcome["error"] = error

    with engine.connect() as first_worker:
        first_worker.begin()
        CLAIMS.create(first_worker)
        thread = threading.Thread(target=second_worker)
        thread.start()
        time.sleep(1.5)  # the second worker has seen no table and its CREATE TABLE now waits
        first_worker.commit()
    thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["claims"].claim("k")
    outcome["claims"].close()
    engine.dispose()


def test_a_worker_whose_claim_was_taken_over_is_told_so_by_its_beat_and_its_finish(tmp_path, capsys):
    """Issue 19: beat and finish updated zero rows and nobody looked, so both workers trained it."""
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    slow, other = Claims("s", url, stale_seconds=0.5, beat_seconds=0.1), Claims("s", url, stale_seconds=0.5)
    assert slow.claim("k")
    time.sleep(0.8)  # an outage longer than the stale window: no beat got through
    assert other.claim("k"), "a dead-looking claim is taken over"
    with slow.beating("k") as heartbeat:
        assert heartbeat.lost.wait(5), "the first beat after the outage must find the claim gone"
    assert "taken over by another worker" in heartbeat.reason and "this child stops" in capsys.readouterr().err
    assert not slow.beat("k") and not slow.finish("k", DONE)
    assert other.states(["k"]) == {"k": RUNNING} and other.finish("k", DONE)
    slow.close(), other.close()


def test_heartbeat_errors_count_and_a_claim_that_cannot_beat_for_the_stale_window_is_lost(tmp_path, capsys):
    """One warning and then silence, for ever, while the claim went stale: now every failure is said and the
    claim counts as lost once the failures last the stale window."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'claims.db'}"
    worker = Claims("s", url, stale_seconds=0.6, beat_seconds=0.1)
    assert worker.claim("k")
    engine = sa.create_engine(url)
    with worker.beating("k") as heartbeat:
        time.sleep(0.3)
        assert not heartbeat.lost.is_set()
        with engine.begin() as connection:  # the database loses the table: every beat now fails
            connection.execute(sa.text("DROP TABLE lrlab_sweep_claims"))
        assert heartbeat.lost.wait(5)
    err = capsys.readouterr().err
    assert err.count("heartbeat for claim k failed") >= 2, err
    assert "no heartbeat for" in heartbeat.reason and "OperationalError" in heartbeat.reason
    worker.close(), engine.dispose()
