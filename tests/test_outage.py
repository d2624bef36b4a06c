"""A tracking server that goes away for 20 s in the middle of a run loses nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.app_fixtures import free_port, start_mlflow_server, stop_mlflow_server
from tests.conftest import subprocess_env
from tests.stuck_server import hanging_api_server
from train import contract

pytestmark = pytest.mark.slow


def start_server(folder, port) -> subprocess.Popen:
    """The run's server, always on the same port and store: stopping and starting it is the outage."""
    process, _ = start_mlflow_server(f"sqlite:///{folder / 'server.db'}", port=port, workdir=folder, workers=1,
                                     extra_args=("--artifacts-destination", str(folder / "artifacts")))  # fmt: skip
    return process


def test_server_stopped_for_20_seconds_mid_run(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    log = tmp_path / "train.log"
    epochs = 6
    args = ["--data", "demo", "--image-size", "64", "--alpha", "0.35", "--weights", "none", "--stage", "scratch",
            "--lr", "1e-3", "--batch-size", "8", "--epochs", str(epochs), "--experiment", "outage"]
    with open(log, "w") as output:
        trainer = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=tmp_path, env=subprocess_env(uri), stdout=output, stderr=subprocess.STDOUT)
    client = MlflowClient(uri)
    try:
        deadline = time.monotonic() + 300
        run_id = None
        while time.monotonic() < deadline and trainer.poll() is None:
            experiment = client.get_experiment_by_name("outage")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and len(client.get_metric_history(runs[0].info.run_id, contract.LOSS)) >= 1:
                run_id = runs[0].info.run_id
                break
            time.sleep(0.3)
        assert run_id, log.read_text()[-3000:]
        stop_mlflow_server(server)
        time.sleep(20)
        server = start_server(tmp_path, port)
        assert trainer.wait(timeout=400) == 0, log.read_text()[-3000:]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for name in contract.EPOCH_METRICS:
            steps = [m.step for m in client.get_metric_history(run_id, name)]
            assert sorted(steps) == list(range(epochs)), (name, steps)
        assert "tracking store unavailable" in log.read_text(), "the outage happened while training"
    finally:
        if trainer.poll() is None:
            trainer.kill()
        stop_mlflow_server(server)


@pytest.mark.slow
def test_a_server_that_never_returns_leaves_a_file_that_uploads_later(tmp_path, tracking_uri):
    """Metrics that could not be sent are saved; `python -m train.tracking.upload` sends them to the store."""
    from train.tracking.metric_buffer import MetricBuffer

    run = MlflowClient().create_run(MlflowClient().create_experiment("later"))
    gone = MlflowClient(f"http://127.0.0.1:{free_port()}")
    buffer = MetricBuffer(run.info.run_id, gone)
    buffer.log({contract.LOSS: 1.5, contract.ACCURACY: 0.25}, step=0)
    buffer.log({contract.LOSS: 1.2, contract.ACCURACY: 0.5}, step=1)
    assert not buffer.drain(patience_seconds=1, interval_seconds=0.5)
    saved = buffer.save(tmp_path)
    sent = subprocess.run([sys.executable, "-m", "train.tracking.upload", str(saved)], cwd=Path.cwd(), env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert "sent 2 epochs" in sent.stdout
    history = MlflowClient().get_metric_history(run.info.run_id, contract.LOSS)
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 1.5), (1, 1.2)]


def test_a_server_that_answers_health_but_hangs_on_the_api_is_one_line_in_seconds(tmp_path):
    """A proxy whose backend is stuck: /health says OK, every API call hangs. MLflow's own
    defaults (120 s timeout, 7 retries) would hold the run for over 15 minutes."""
    with hanging_api_server() as uri:
        env = {key: value for key, value in subprocess_env(uri).items() if not key.startswith("MLFLOW_HTTP_REQUEST")}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "train", "--stage", "scratch", "--weights", "none"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: tracking server {uri} answers /health but not its API ("), done.stderr[-3000:]
    assert elapsed < 45, elapsed


def test_a_stop_signal_while_the_store_is_down_leaves_a_file_that_ends_the_run(tmp_path, monkeypatch, capsys):
    """The run's end cannot reach the store: its last metrics and KILLED go to a file (said in one
    line), the process ends, and train.tracking.upload later sends both: no run left RUNNING forever."""
    import json
    import signal

    import mlflow

    from train.errors import TrainingInterrupted
    from train.run import interrupt
    from train.run.trainer import _end_interrupted
    from train.tracking import store as tracking_store
    from train.tracking.metric_buffer import MetricBuffer

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("stop-while-down")  # not the experiment id an earlier test in this process left active
    tracking_store.bound_http_requests()
    try:
        with pytest.raises(TrainingInterrupted):
            with mlflow.start_run() as run, interrupt.GracefulStop() as stopper:
                run_id = run.info.run_id
                metrics = MetricBuffer(run_id)
                stopper.on_stop = lambda stopped: _end_interrupted(run_id, stopped, metrics)
                metrics.log({contract.LOSS: 1.5}, 0)
                stop_mlflow_server(server)
                metrics.log({contract.LOSS: 1.2}, 1)  # queued: the store is down
                stopper.in_fit, stopper.epoch = True, 2
                signal.raise_signal(signal.SIGTERM)
                stopper.check()
        assert mlflow.active_run() is None
        path = tmp_path / f"unsent-metrics-{run_id}.json"
        said = [line for line in capsys.readouterr().err.splitlines() if "did not take its end" in line]
        assert said == [f"run {run_id}: the tracking store did not take its end; its last metrics and KILLED are in {path}: "
                        f"send them with `python -m train.tracking.upload {path}`"]
        assert json.loads(path.read_text())["end"] == {"status": "KILLED", "stop_reason": "SIGTERM during epoch 2"}

        server = start_server(tmp_path, port)
        done = subprocess.run([sys.executable, "-m", "train.tracking.upload", str(path)], env=subprocess_env(uri), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"run {run_id} marked KILLED" in done.stdout
        ended = MlflowClient(uri).get_run(run_id)
        assert ended.info.status == "KILLED" and ended.data.tags[contract.TAG_STOP_REASON] == "SIGTERM during epoch 2"
        assert sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, contract.LOSS)) == [0, 1]
    finally:
        mlflow.set_tracking_uri(None)
        stop_mlflow_server(server)
