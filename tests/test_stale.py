"""`python -m train.tracking.stale`: which RUNNING runs it calls stale, on a real SQLite store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

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
