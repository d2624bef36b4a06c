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
