"""`python -m train.upload FILE`: send metrics a run could not send while the server was down."""

import sys
from pathlib import Path

from train import contract
from train.metric_buffer import upload


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: python -m train.upload unsent-metrics-RUN_ID.json  (MLFLOW_TRACKING_URI names the store)", file=sys.stderr)
        return 2
    import mlflow

    mlflow.set_tracking_uri(contract.tracking_uri())
    sent = upload(Path(argv[0]))
    print(f"sent {sent} epochs of metrics to {contract.tracking_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
