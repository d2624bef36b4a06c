"""A stop signal that lands inside a write to the tracking store must not leave the store locked:
the stop's own bookkeeping (the run marked KILLED) writes to the same store next."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time
import traceback

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from train.run.signals import raising_outside_database_code, stop_signals_to


class Stopped(BaseException):
    """Like TrainingInterrupted: a BaseException, which SQLAlchemy's error handling lets through."""


def _stop(signum):
    raise Stopped(signum)


def _raw_handler(signum, frame):
    _stop(signum)


def _signal_inside_a_write(database: str, signum: int = signal.SIGTERM) -> threading.Thread:
    """Have `signum` reach the main thread while it is inside SQLite's execute, in a write session.

    Another connection holds an exclusive lock, so the store's next statement (set_tag's SELECT of
    the run) waits in SQLite's busy handler; once the main thread is seen there, the signal is sent
    and the lock let go. Python runs the handler as the execute returns, with the SELECT's rows
    unread: its statement keeps a shared lock, and the session's own commit can never get the
    write lock. The moment a sweep's SIGTERM hit in CI."""
    blocker = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    main = threading.main_thread().ident

    def send():
        deadline = time.monotonic() + 30
        while sys._current_frames()[main].f_code.co_name != "do_execute" and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signum)
        time.sleep(0.2)
        blocker.execute("ROLLBACK")
        blocker.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _tag_until_stopped(client, run_id, database):
    sender = _signal_inside_a_write(database)
    with pytest.raises(Stopped) as stopped:
        for i in range(50):
            client.set_tag(run_id, f"tag{i}", "value")
        time.sleep(5)  # a deferred signal comes back within RETRY_SECONDS
    sender.join()
    return [frame for frame, _ in traceback.walk_tb(stopped.value.__traceback__)]


def _new_run():
    client = MlflowClient()
    return client, client.create_run(mlflow.set_experiment("signals").experiment_id).info.run_id


def test_a_signal_inside_a_store_session_is_raised_after_it_and_the_run_can_still_be_marked_killed(tracking_uri, tmp_path):
    client, run_id = _new_run()
    with stop_signals_to(raising_outside_database_code(_stop)):
        frames = _tag_until_stopped(client, run_id, tmp_path / "mlflow.db")
    assert not any(frame.f_globals["__name__"].startswith("sqlalchemy") for frame in frames), "raised outside the store"
    client.set_terminated(run_id, "KILLED")
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["tag0"] == "value", "the write the signal landed in was committed, not cut"


@pytest.mark.slow  # waits out MLflow's 20 s SQLite busy timeout
def test_raising_inside_the_write_instead_leaves_the_store_locked(tracking_uri, tmp_path):
    """Why the handler defers: raising at once, from the same place, breaks the next write."""
    client, run_id = _new_run()
    with stop_signals_to(_raw_handler):
        frames = _tag_until_stopped(client, run_id, tmp_path / "mlflow.db")
    assert any(frame.f_code.co_name == "do_execute" for frame in frames), "raised inside the write"
    with pytest.raises(mlflow.exceptions.MlflowException, match="database is locked"):
        client.set_terminated(run_id, "KILLED")


@pytest.fixture
def restored_signal_handlers():
    """GracefulStop leaves SIGINT and SIGTERM ignored once it has recorded a stop (the process is
    leaving); this process is pytest's, which is not."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_second_ctrl_c_inside_a_store_call_still_lets_the_run_be_recorded_killed(tracking_uri, tmp_path, restored_signal_handlers):
    """The trainer's GracefulStop notes a first signal and raises on a second one ("now"): that one
    too is deferred out of the store call it lands in, so its on_stop can mark the run KILLED."""
    from train.errors import TrainingInterrupted
    from train.run.interrupt import GracefulStop

    client, run_id = _new_run()
    stop = GracefulStop(on_stop=lambda s: client.set_terminated(run_id, "KILLED"))
    with pytest.raises(TrainingInterrupted), stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first: noted, to be acted on at the next safe point
        time.sleep(0.1)
        assert stop.signum == signal.SIGINT and not stop.hurry
        sender = _signal_inside_a_write(tmp_path / "mlflow.db", signal.SIGINT)
        for i in range(50):
            client.set_tag(run_id, f"tag{i}", "value")
        time.sleep(5)
    sender.join()
    assert stop.hurry and client.get_run(run_id).info.status == "KILLED"
