"""A training run's heartbeat: a tag holding the time, set every HEARTBEAT_SECONDS from a thread.

`python -m train.tracking.stale` judges a run from another host by how long it has been silent.
Metrics alone say nothing during a long preparation or a first epoch (Food-101 on a CPU takes
longer than the 30 minutes stale waits), so while a run prepares its data and trains, a daemon
thread writes the time into the tag `contract.TAG_HEARTBEAT`. Cost: one tag write a minute, from
its own client, never blocking training; a write that fails (the store is down) is skipped, and
the next one tries again.
"""

from __future__ import annotations

import threading
import time

from train import contract

HEARTBEAT_SECONDS = 60  # how often a live run says so; stale's --max-silence-minutes must exceed it


def now_ms() -> int:
    return int(time.time() * 1000)


class Heartbeat:
    """Beats for `run_id` from entering the block until leaving it (or `stop()`)."""

    def __init__(self, run_id: str, interval_seconds: float = HEARTBEAT_SECONDS):
        self.run_id = run_id
        self.interval_seconds = interval_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)  # a write in flight is bounded by the HTTP limits; do not wait it out

    def _beat_until_stopped(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(contract.tracking_uri())  # its own: the main thread's client is busy training
        while True:
            try:
                client.set_tag(self.run_id, contract.TAG_HEARTBEAT, str(now_ms()))
            except Exception:  # noqa: BLE001, S110 - an outage: metrics say so to the user; the next beat retries
                pass
            if self._stopped.wait(self.interval_seconds):
                return


def last_sign_of_life_ms(run, loss_history) -> int:
    """When the run last showed it was alive: its start, its last `loss` point, its last heartbeat."""
    heartbeat = run.data.tags.get(contract.TAG_HEARTBEAT, "")
    beats = [int(heartbeat)] if heartbeat.isdigit() else []
    return max([run.info.start_time or 0, *beats, *(point.timestamp for point in loss_history)])
