"""Routing the stop signals (SIGTERM, SIGINT) to a handler for the length of a block."""

from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what a pre-empting scheduler and Ctrl-C send


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


def _absorb(signum, frame):
    """A stop signal that came after the stop was done: the process is already on its way out."""


def absorb_stop_signals() -> None:
    """From now on SIGTERM and SIGINT do nothing (main thread only, like `stop_signals_to`).

    For a process that has handled its stop and is exiting: Python's own handlers would turn a
    late second Ctrl-C into a KeyboardInterrupt on the way out, and the process would die by the
    signal, its exit status and last line lost. A Python no-op rather than SIG_IGN: a signal
    already pending when the handler changes would otherwise print "ignored due to race condition"."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _absorb)
