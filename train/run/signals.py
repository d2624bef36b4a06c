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
