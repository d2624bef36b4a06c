"""What lrlab prints, and what it keeps MLflow from printing: no progress bar per artifact download."""

from __future__ import annotations

import subprocess
import sys

import mlflow

from tests.conftest import subprocess_env

DOWNLOAD = """
import sys
from train.tracking.store import connect
connect()
import mlflow
for _ in range(3):
    mlflow.artifacts.download_artifacts(run_id=sys.argv[1], dst_path=sys.argv[2])
print("downloaded")
"""


def test_artifact_downloads_draw_no_progress_bars(tracking_uri, tmp_path):
    """A sweep printed ~34 'Downloading artifacts' bars (models, checkpoints, class names)."""
    mlflow.set_experiment("console")  # this store's own: another module's fixture may have made another one active
    with mlflow.start_run() as run:
        for name in ("class_names.json", "history.csv", "data_report.json"):
            mlflow.log_text("{}", name)
    done = subprocess.run([sys.executable, "-c", DOWNLOAD, run.info.run_id, str(tmp_path / "out")], env=subprocess_env(tracking_uri),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "downloaded", done.stderr[-2000:]
    assert "Downloading artifacts" not in done.stderr, done.stderr[-2000:]
