"""A tracking server that goes away for 20 s in the middle of a run loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import VENV_BIN, subprocess_env
from train import contract

pytestmark = pytest.mark.slow


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder, port) -> subprocess.Popen:
    command = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts")]
    log = open(folder / f"server-{time.time():.0f}.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except OSError:
            time.sleep(0.3)
    stop_server(process)
    raise AssertionError("mlflow server did not start")


def stop_server(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


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
        stop_server(server)
        time.sleep(20)
        server = start_server(tmp_path, port)
        assert trainer.wait(timeout=400) == 0, log.read_text()[-3000:]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"


def test_a_server_that_answers_health_but_hangs_on_the_api_is_one_line_in_seconds(tmp_path):
    """A proxy whose backend is stuck: /health says OK, every API call hangs. MLflow's own
    defaults (120 s timeout, 7 retries) would hold the run for over 15 minutes."""
    import http.server
    import threading

    release = threading.Event()

    class HealthyButStuck(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")
            else:
                release.wait(120)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthyButStuck)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    env = {key: value for key, value in subprocess_env(uri).items() if not key.startswith("MLFLOW_HTTP_REQUEST")}
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "train", "--stage", "scratch", "--weights", "none"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: tracking server {uri} answers /health but not its API ("), done.stderr[-3000:]
    assert elapsed < 45, elapsed
        for name in contract.EPOCH_METRICS:
            steps = [m.step for m in client.get_metric_history(run_id, name)]
            assert sorted(steps) == list(range(epochs)), (name, steps)
        assert "tracking store unavailable" in log.read_text(), "the outage happened while training"
    finally:
        if trainer.poll() is None:
            trainer.kill()
        stop_server(server)


@pytest.mark.slow
def test_a_server_that_never_returns_leaves_a_file_that_uploads_later(tmp_path, tracking_uri):
    """Metrics that could not be sent are saved; `python -m train.upload` sends them to the store."""
    from train.metric_buffer import MetricBuffer

    run = MlflowClient().create_run(MlflowClient().create_experiment("later"))
    gone = MlflowClient(f"http://127.0.0.1:{free_port()}")
    buffer = MetricBuffer(run.info.run_id, gone)
    buffer.log({contract.LOSS: 1.5, contract.ACCURACY: 0.25}, step=0)
    buffer.log({contract.LOSS: 1.2, contract.ACCURACY: 0.5}, step=1)
    assert not buffer.drain(patience_seconds=1, interval_seconds=0.5)
    saved = buffer.save(tmp_path)
    sent = subprocess.run([sys.executable, "-m", "train.upload", str(saved)], cwd=Path.cwd(), env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert "sent 2 epochs" in sent.stdout
    history = MlflowClient().get_metric_history(run.info.run_id, contract.LOSS)
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 1.5), (1, 1.2)]
