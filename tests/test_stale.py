"""`python -m train.tracking.stale`: which RUNNING runs it calls stale, on a real SQLite store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from tests.conftest import error_line
from tests.stuck_server import hanging_api_server
from train import contract
from train.tracking.stale import command


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_only_training_runs_are_judged_and_marked(tracking_uri):
    client = MlflowClient()
    experiment = client.create_experiment("stale")
    two_hours_ago = int(time.time() * 1000) - 2 * 3600 * 1000
    host = socket.gethostname()

    def running(name, **tags):
        return client.create_run(experiment, start_time=two_hours_ago, tags=tags, run_name=name).info.run_id

    silent_train = running("silent train", **{contract.TAG_KIND: contract.KIND_TRAIN})
    dead_train = running("dead train", **{contract.TAG_KIND: contract.KIND_TRAIN, contract.TAG_HOST: host, contract.TAG_PID: str(_dead_pid())})
    live_train = running("live train", **{contract.TAG_KIND: contract.KIND_TRAIN, contract.TAG_HOST: host, contract.TAG_PID: str(os.getpid())})
    others = [running(kind, **{contract.TAG_KIND: kind}) for kind in (contract.KIND_SWEEP, contract.KIND_LR_FIND, contract.KIND_EVALUATE)]

    done = CliRunner().invoke(command, ["--experiment", "stale", "--mark"])
    assert done.exit_code == 0, done.output
    assert "2 stale run(s)" in done.output, done.output
    status = {run_id: client.get_run(run_id).info.status for run_id in [silent_train, dead_train, live_train, *others]}
    assert status[silent_train] == status[dead_train] == "KILLED"
    assert status[live_train] == "RUNNING"
    assert [status[run_id] for run_id in others] == ["RUNNING"] * 3  # a live sweep parent, lr_find, evaluate
    assert client.get_run(silent_train).data.tags[contract.TAG_STOP_REASON].startswith("stale: nothing logged for 120 minutes")


def test_a_live_run_of_another_host_that_beats_is_not_stale(tracking_uri):
    """A long preparation or first epoch logs no `loss` for over 30 minutes; its heartbeat says it lives."""
    client = MlflowClient()
    experiment = client.create_experiment("heartbeats")
    now = int(time.time() * 1000)
    two_hours_ago = now - 2 * 3600 * 1000

    def running(name, beat_ms):
        tags = {contract.TAG_KIND: contract.KIND_TRAIN, contract.TAG_HOST: "another-host", contract.TAG_PID: "1", contract.TAG_HEARTBEAT: str(beat_ms)}
        return client.create_run(experiment, start_time=two_hours_ago, tags=tags, run_name=name).info.run_id

    beating = running("preparing Food-101", now - 60_000)
    stopped = running("beat stopped", two_hours_ago + 60_000)
    done = CliRunner().invoke(command, ["--experiment", "heartbeats", "--mark"])
    assert done.exit_code == 0, done.output
    assert "1 stale run(s)" in done.output, done.output
    assert client.get_run(beating).info.status == "RUNNING"
    assert client.get_run(stopped).info.status == "KILLED"


def test_the_heartbeat_thread_beats_while_the_block_runs(tracking_uri):
    from train.tracking.heartbeat import Heartbeat

    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("beat")).info.run_id
    with Heartbeat(run_id, interval_seconds=0.2):
        time.sleep(0.1)
        first = int(client.get_run(run_id).data.tags[contract.TAG_HEARTBEAT])
        time.sleep(0.6)
        later = int(client.get_run(run_id).data.tags[contract.TAG_HEARTBEAT])
    assert later > first
    time.sleep(0.5)
    assert int(client.get_run(run_id).data.tags[contract.TAG_HEARTBEAT]) == int(client.get_run(run_id).data.tags[contract.TAG_HEARTBEAT])


def _stale(uri: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    from tests.conftest import subprocess_env

    return subprocess.run([sys.executable, "-m", "train.tracking.stale", *args], env=subprocess_env(uri), cwd=cwd,
                          capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("minutes", ["-5", "0", "nan", "1"])
def test_a_silence_shorter_than_two_heartbeats_is_refused(tracking_uri, minutes):
    done = CliRunner().invoke(command, ["--max-silence-minutes", minutes, "--mark"])
    assert done.exit_code == 2, done.output
    assert "must be at least 2 minutes" in done.output


def test_a_missing_store_is_one_line_and_is_not_created(tmp_path):
    database = tmp_path / "none.db"
    done = _stale(f"sqlite:///{database}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_line(done.stderr).startswith(f"error: tracking store sqlite:///{database} does not exist"), done.stderr[-2000:]
    assert not database.exists()


def test_a_text_file_as_store_is_one_line(tmp_path):
    database = tmp_path / "notes.txt"
    database.write_text("not a database\n" * 10)
    done = _stale(f"sqlite:///{database}", cwd=tmp_path)
    assert done.returncode == 2
    assert error_line(done.stderr) == f"error: tracking store sqlite:///{database}: '{database}' is not an SQLite database; move it away or set MLFLOW_TRACKING_URI to a new file"


def test_a_server_that_is_down_is_one_line_in_seconds(tmp_path):
    started = time.monotonic()
    done = _stale("http://127.0.0.1:9", cwd=tmp_path)
    assert done.returncode == 2
    assert error_line(done.stderr).startswith("error: tracking server http://127.0.0.1:9 does not answer"), done.stderr[-2000:]
    assert time.monotonic() - started < 60  # 5 s of probe; the rest is importing MLflow on a busy machine


def test_a_server_whose_api_hangs_is_one_line_in_seconds(tmp_path):
    with hanging_api_server() as uri:
        started = time.monotonic()
        done = _stale(uri, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_line(done.stderr).startswith(f"error: tracking server {uri} answers /health but not its API"), done.stderr[-2000:]
    assert time.monotonic() - started < 60  # 5 s of probe; the rest is importing MLflow on a busy machine
