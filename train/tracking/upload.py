"""`python -m train.tracking.upload FILE`: send metrics a run could not send while the server was down."""

import json
import sys
from pathlib import Path

from train.errors import ConfigError
from train.messages import first_line, redact_uri

USAGE = "usage: python -m train.tracking.upload unsent-metrics-RUN_ID.json  (MLFLOW_TRACKING_URI names the store)"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print(USAGE, file=sys.stderr)
        return 2
    try:
        return _send(Path(argv[0]))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the store refused or is still down: one line; the file is kept for another try
        from train.tracking.store import access_error

        refused = access_error(error) if hasattr(error, "error_code") else None
        print(f"error: {refused or first_line(error)}; {argv[0]} is unchanged, send it again when the store is back", file=sys.stderr)
        return 1


def _send(path: Path) -> int:
    try:
        saved = json.loads(path.read_text())
        saved["run_id"], len(saved["points"])  # KeyError or TypeError: not such a file
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"'{path}' is not a file of unsent metrics written by a training run ({error.__class__.__name__}: {error})") from None
    _check_points(path, saved["points"])  # before the store: a bad point is the file's fault, not an outage
    end = saved.get("end")
    if end is not None and not (isinstance(end, dict) and end.get("status") in ("KILLED", "FAILED") and isinstance(end.get("stop_reason"), str)):
        raise ConfigError(f"'{path}' ends the run in a way a training run never does ({json.dumps(end)[:120]}); fix or remove \"end\"")
    import mlflow

    from train.tracking import store as tracking_store
    from train.tracking.metric_buffer import upload

    uri = tracking_store.require_existing_store()
    tracking_store.bound_http_requests(tracking_store.READER_HTTP_LIMITS)
    mlflow.set_tracking_uri(uri)
    sent = upload(path)
    ended = f"; run {saved['run_id']} marked {saved['end']['status']}" if saved.get("end") else ""
    print(f"sent {sent} epochs of metrics to {redact_uri(uri)}{ended}")
    return 0


def _check_points(path: Path, points) -> None:
    """Each point as MetricBuffer.save writes it: whole step and timestamp, metrics named by text with numbers."""
    for index, point in enumerate(points):
        try:
            fine = (isinstance(point["step"], int) and isinstance(point["timestamp"], int) and isinstance(point["metrics"], dict)
                    and all(isinstance(key, str) and isinstance(value, int | float) and not isinstance(value, bool)
                            for key, value in point["metrics"].items()))
        except (KeyError, TypeError):
            fine = False
        if not fine:
            raise ConfigError(f"'{path}' point {index} is not a step, a timestamp and numeric metrics ({json.dumps(point)[:120]}); "
                              "fix or remove that point, the store was not contacted")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
