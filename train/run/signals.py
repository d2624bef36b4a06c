"""Routing the stop signals (SIGTERM, SIGINT) to a handler for the length of a block."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what a pre-empting scheduler and Ctrl-C send

# Code an exception must not interrupt. Raised inside a SQLite session (a SELECT executed, its rows
# not yet read), it leaves that statement's lock held, since SQLAlchemy rolls back for Exceptions
# only; the stop's own bookkeeping (the run marked KILLED) then fails with "database is locked".
DATABASE_MODULES = ("sqlalchemy", "sqlite3", "psycopg2", "mlflow.store", "optuna.storages")
RETRY_SECONDS = 0.05  # how soon a signal deferred out of database code is delivered again


@contextlib.contextmanager
def stop_signals_to(handler):
    """SIGTERM and SIGINT go to `handler` inside the block, to the previous handlers after it.
    Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def raising_outside_database_code(raise_stop):
    """A signal handler that calls `raise_stop(signum)` (which raises) at once, unless the signal
    landed inside database code (`deferred_out_of_database_code`). For handlers that must stop the
    process wherever it is (a sweep loading data, building a model or waiting for other workers)
    and cannot wait for a safe point of their own."""

    def handle(signum, frame):
        if not deferred_out_of_database_code(signum, frame):
            raise_stop(signum)

    return handle


def deferred_out_of_database_code(signum: int, frame) -> bool:
    """If `frame` or any of its callers is in one of DATABASE_MODULES, send `signum` to this process
    again in RETRY_SECONDS (from a thread: not now, in a handler) and return True: the handler
    returns and meets the signal again, until it lands outside."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if any(module == name or module.startswith(name + ".") for name in DATABASE_MODULES):
            timer = threading.Timer(RETRY_SECONDS, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return True
        frame = frame.f_back
    return False


def absorb_stop_signals() -> None:
    """From now on SIGTERM and SIGINT are ignored (main thread only, like `stop_signals_to`).

    For a process that has recorded its stop and is leaving. Python's own SIGINT handler, put back
    when the block ends, turns a late second Ctrl-C into a KeyboardInterrupt on the way out; and
    Python's finalization puts back the default disposition of every signal that has a Python
    handler, so a signal in that last moment kills the process (status -2), its exit status lost.
    SIG_IGN is the one disposition finalization leaves in place."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
