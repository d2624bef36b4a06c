"""Per-epoch metrics that survive a tracking server restart.

Each epoch's metrics are queued with their own timestamp and sent in one `log_batch`.
When the server does not answer, they stay queued (training goes on) and are re-sent,
in order, with the next epoch or at the end, when the trainer waits for the server.
Re-sending the same (key, step, value, timestamp) is harmless: it is the same point.
If the server never comes back, the queue is written to a JSON file that
`python -m train.tracking.upload FILE` sends later. A refusal (a 4xx answer: a deleted run, a bad
value, no permission) is not an outage: waiting would only repeat it, so it fails at once.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from train.errors import TrainingError
from train.messages import first_line
from train.tracking import store as tracking_store


class MetricsRefused(TrainingError):
    """The store answered and said no (a deleted run, a bad value, no permission): not an outage, not retried."""


class MetricBuffer:
    def __init__(self, run_id: str, client: MlflowClient | None = None):
        self.run_id = run_id
        self.client = client or MlflowClient()
        self.pending: list[tuple[int, dict[str, float], int]] = []  # (step, metrics, timestamp ms)
        self._warned = False

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.pending.append((step, metrics, int(time.time() * 1000)))
        self.flush()

    def flush(self) -> bool:
        """Send what is queued; return True when nothing is left."""
        while self.pending:
            step, metrics, timestamp = self.pending[0]
            batch = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
            try:
                # Not minutes of retries inside an epoch: a failed send is queued and retried with the next one.
                with tracking_store.http_limits(tracking_store.EPOCH_HTTP_LIMITS):
                    self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            except Exception as error:
                if not tracking_store.is_transient(error):
                    refused = tracking_store.access_error(error) if isinstance(error, MlflowException) else None
                    raise MetricsRefused(str(refused) if refused else f"the tracking store refused the metrics of run {self.run_id} "
                                         f"({first_line(error)}); this is not an outage, so they are not retried") from None
                if not self._warned:  # the store is unreachable: keep the points, go on training
                    print(f"warning: tracking store unavailable ({first_line(error)[:160]}); metrics are kept and re-sent when it is back", file=sys.stderr, flush=True)
                    self._warned = True
                return False
            self.pending.pop(0)
        if self._warned:
            print("tracking store is back: queued metrics sent", file=sys.stderr, flush=True)
            self._warned = False
        return True

    def drain(self, patience_seconds: float, interval_seconds: float = 2.0, check=None) -> bool:
        """Retry until everything is sent or `patience_seconds` have passed.

        `check()` runs between tries: the trainer's stop check, so a signal does not wait out the patience."""
        deadline = time.monotonic() + patience_seconds
        while not self.flush():
            if time.monotonic() >= deadline:
                return False
            if check is not None:
                check()
            time.sleep(interval_seconds)
        return True

    def save(self, folder: Path, end: dict[str, str] | None = None) -> Path:
        """Write what could not be sent, for `python -m train.tracking.upload`; `end` ({"status": "KILLED",
        "stop_reason": ...}) is how the run ended, for a run the store could not be told about."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"unsent-metrics-{self.run_id}.json"
        points = [{"step": step, "timestamp": timestamp, "metrics": metrics} for step, metrics, timestamp in self.pending]
        path.write_text(json.dumps({"run_id": self.run_id, "points": points, **({"end": end} if end else {})}, indent=1))
        return path


def upload(path: Path, client: MlflowClient | None = None) -> int:
    """Send a file written by `MetricBuffer.save` (and end the run as it says); return the number of epochs sent."""
    from train import contract

    saved = json.loads(Path(path).read_text())
    buffer = MetricBuffer(saved["run_id"], client)
    buffer.pending = [(p["step"], p["metrics"], p["timestamp"]) for p in saved["points"]]
    if not buffer.flush():
        raise RuntimeError(f"tracking store still unavailable; {len(buffer.pending)} epochs not sent")
    end = saved.get("end")
    if end:
        buffer.client.set_tag(saved["run_id"], contract.TAG_STOP_REASON, end["stop_reason"])
        buffer.client.set_terminated(saved["run_id"], end["status"])
    return len(saved["points"])

