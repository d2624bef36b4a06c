"""`python -m train.tracking.upload`: a bad file or a store that is still down is one line, and the file is kept."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import error_line, subprocess_env


def _upload(path, tracking_uri: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.tracking.upload", str(path)], env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("content", ["not json at all", json.dumps({"points": []}), json.dumps([1, 2])])
def test_a_file_that_is_not_unsent_metrics_is_one_line(tmp_path, content):
    path = tmp_path / "unsent-metrics-x.json"
    path.write_text(content)
    done = _upload(path, f"sqlite:///{tmp_path}/mlflow.db")
    assert done.returncode == 2
    assert error_line(done.stderr).startswith(f"error: '{path}' is not a file of unsent metrics")


def test_a_store_that_is_still_down_is_one_line_and_the_file_is_kept(tmp_path):
    path = tmp_path / "unsent-metrics-abc.json"
    saved = json.dumps({"run_id": "abc", "points": [{"step": 0, "metrics": {"loss": 1.0}, "timestamp": 1}]})
    path.write_text(saved)
    done = _upload(path, "http://127.0.0.1:9")
    assert done.returncode == 2
    assert error_line(done.stderr).startswith("error: tracking server http://127.0.0.1:9 does not answer")
    assert path.read_text() == saved


@pytest.mark.parametrize("point", [{"step": 0, "metrics": {"loss": "high"}, "timestamp": 1}, {"step": 0, "metrics": {"loss": 1.0}}, {"step": "x", "metrics": {}, "timestamp": 1}, 7])
def test_malformed_points_are_the_files_fault_not_an_outage(tmp_path, point):
    path = tmp_path / "unsent-metrics-abc.json"
    saved = json.dumps({"run_id": "abc", "points": [{"step": 0, "metrics": {"loss": 1.0}, "timestamp": 1}, point]})
    path.write_text(saved)
    done = _upload(path, f"sqlite:///{tmp_path}/mlflow.db")
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert line.startswith(f"error: '{path}' point 1 is not a step, a timestamp and numeric metrics"), line
    assert "store is back" not in line and "unavailable" not in line
    assert path.read_text() == saved
    assert not (tmp_path / "mlflow.db").exists()  # the store was not contacted, let alone created


def test_a_store_that_does_not_exist_is_one_line_and_is_not_created(tmp_path):
    path = tmp_path / "unsent-metrics-abc.json"
    path.write_text(json.dumps({"run_id": "abc", "points": [{"step": 0, "metrics": {"loss": 1.0}, "timestamp": 1}]}))
    done = _upload(path, f"sqlite:///{tmp_path}/elsewhere.db")
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_line(done.stderr).startswith(f"error: tracking store sqlite:///{tmp_path}/elsewhere.db does not exist")
    assert not (tmp_path / "elsewhere.db").exists()
