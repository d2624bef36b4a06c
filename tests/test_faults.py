"""Faults: signals, SIGKILL, NaN loss. Each test fails without the feature it names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, VENV_BIN, subprocess_env, tiny_config
from train import contract
from train.errors import TrainingError
from train.run.schedules import learning_rate_at

SLOW_EPOCHS = ["--data", "demo", "--image-size", "64", "--alpha", "0.35", "--weights", "none", "--stage", "scratch",
               "--lr", "1e-3", "--batch-size", "8", "--seed", "7", "--schedule", "exponential", "--decay", "0.5"]


def _only_run(experiment="tests"):
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (run,) = client.search_runs([experiment_id])
    return run


def _wait_for(predicate, timeout=240, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out")


def _epochs_logged(run_id):
    return len(MlflowClient().get_metric_history(run_id, contract.LOSS))


def _run_id_when_epochs_logged(epochs: int, experiment="tests", process=None, log=None, timeout=240, run_id=None):
    """The ID of the experiment's only run (or of `run_id`, when given) once it has `epochs` epochs logged."""

    def ready():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"training ended early ({process.returncode}): {log.read_text()[-3000:] if log else ''}")
        try:
            found = run_id or _only_run(experiment).info.run_id
        except (AttributeError, ValueError):
            return None
        return found if _epochs_logged(found) >= epochs else None

    return _wait_for(ready, timeout=timeout)


def _steps(run_id):
    return {name: sorted(m.step for m in MlflowClient().get_metric_history(run_id, name)) for name in contract.EPOCH_METRICS}


def _sigterm_when_epochs_logged(command: list[str], tracking_uri: str, epochs: int, log: Path, run_id: str | None = None) -> str:
    """Start `command` (an `mlflow run`) and SIGTERM its process group once the run (the experiment's
    only one, or `run_id`) has `epochs` epochs logged, that is during the next; return the run's ID once it has ended."""
    with open(log, "w") as output:  # a file, not a pipe: a full pipe would block the trainer
        process = subprocess.Popen(command, cwd=Path.cwd(), env=subprocess_env(tracking_uri), start_new_session=True, stdout=output, stderr=subprocess.STDOUT)
    try:
        run_id = _run_id_when_epochs_logged(epochs, process=process, log=log, timeout=900, run_id=run_id)
        os.killpg(process.pid, signal.SIGTERM)  # what a pre-empting scheduler does to the job's processes
        _wait_for(lambda: MlflowClient().get_run(run_id).info.status != "RUNNING", timeout=120)
    finally:
        process.wait(timeout=120)
    return run_id


def _assert_killed_during(run_id: str, epoch: int, log: Path):
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED", log.read_text()[-3000:]
    assert run.data.tags[contract.TAG_STOP_REASON].startswith(f"SIGTERM during epoch {epoch}"), run.data.tags[contract.TAG_STOP_REASON]
    assert "checkpoint/latest.weights.h5" in {a.path for a in MlflowClient().list_artifacts(run_id, "checkpoint")}


@pytest.mark.slow
def test_sigterm_in_epoch_3_then_resume_in_the_same_run(tracking_uri, tmp_path):
    """Both ways the README gives, one after the other on one run pre-empted twice: `mlflow run -P resume=ID`
    with the same -P (MLflow logged the empty init_model as ''; the resume check once took that for a
    change), stopped again in epoch 4, then `mlflow run --run-id ID`."""
    epochs = 5
    command = [str(VENV_BIN / "mlflow"), "run", str(REPO), "--env-manager", "local", "--experiment-name", "tests"]
    params = [item for key, value in zip(SLOW_EPOCHS[::2], SLOW_EPOCHS[1::2], strict=True) for item in ("-P", f"{key[2:].replace('-', '_')}={value}")]
    params += ["-P", f"epochs={epochs}"]
    first = tmp_path / "first.log"
    run_id = _sigterm_when_epochs_logged(command + params, tracking_uri, 2, first)  # epochs 0 and 1 are done: we are in the third
    _assert_killed_during(run_id, 2, first)

    second = tmp_path / "second.log"  # -P resume: mlflow run's own new run stays empty, the training goes on in run_id
    _sigterm_when_epochs_logged(command + ["-P", f"resume={run_id}"] + params, tracking_uri, 3, second, run_id=run_id)
    _assert_killed_during(run_id, 3, second)
    assert f"resuming run {run_id} after epoch 2/{epochs} (MLflow step 1)" in second.read_text()  # from the checkpoint
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    (launcher,) = MlflowClient().search_runs([experiment_id], f"tags.{contract.TAG_KIND} = '{contract.KIND_LAUNCHER}'")
    assert launcher.data.tags[contract.TAG_STOP_REASON].startswith(f"empty: -P resume={run_id}")
    assert f"mlflow run's own run {launcher.info.run_id} stays empty" in second.read_text()

    resumed = subprocess.run(command + ["--run-id", run_id] + params, cwd=Path.cwd(), env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {run_id} after epoch 3/{epochs} (MLflow step 2)" in resumed.stdout, resumed.stdout[-3000:]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert contract.TAG_STOP_REASON not in run.data.tags  # FINISHED: "SIGTERM during epoch 3" is history
    training = f"tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'"
    assert [r.info.run_id for r in MlflowClient().search_runs([experiment_id], training)] == [run_id]  # no empty training run beside it
    # Each epoch logged once, and each epoch's rate at its step of the schedule: both resumes went on
    # from the epoch they stopped in, not from 0.
    assert all(steps == list(range(epochs)) for steps in _steps(run_id).values()), _steps(run_id)
    lrs = sorted(MlflowClient().get_metric_history(run_id, contract.LEARNING_RATE), key=lambda m: m.step)
    assert [m.value for m in lrs] == pytest.approx([learning_rate_at(e, tiny_config(lr=1e-3, epochs=epochs, schedule="exponential", decay=0.5)) for e in range(epochs)])
    # And from the checkpoint's weights, not fresh ones: a fresh model's first epoch loses about as much
    # as epoch 0 did (2.08 here, more at the decayed rate); the trained one's epochs 2-4 lose 1.2-1.6.
    losses = [m.value for m in sorted(MlflowClient().get_metric_history(run_id, contract.LOSS), key=lambda m: m.step)]
    assert max(losses[2:]) < losses[0] - 0.2, losses


@pytest.mark.slow
def test_sigkill_leaves_a_stale_run_that_is_detected_marked_and_resumed(tracking_uri):
    args = [*SLOW_EPOCHS, "--epochs", "3", "--experiment", "tests"]
    process = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=Path.cwd(), env=subprocess_env(tracking_uri),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_id = _run_id_when_epochs_logged(1, process=process)
    process.kill()
    process.wait()
    assert MlflowClient().get_run(run_id).info.status == "RUNNING"  # MLflow alone never learns it died

    listed = subprocess.run([sys.executable, "-m", "train.tracking.stale", "--mark"], cwd=Path.cwd(), env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout and "1 stale run(s)" in listed.stdout
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[contract.TAG_STOP_REASON].startswith("stale: process")

    resumed = subprocess.run([sys.executable, "-m", "train", *args, "--resume", run_id], cwd=Path.cwd(), env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    finished = MlflowClient().get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert contract.TAG_STOP_REASON not in finished.data.tags  # "stale: process ... is gone" no longer says why it ended
    assert all(steps == [0, 1, 2] for steps in _steps(run_id).values())


@pytest.mark.slow  # trains for real
def test_nan_loss_fails_the_run_with_a_tag_and_keeps_the_curves(tracking_uri):
    """lr=1e3 under float16 (the GPU default) overflows within a few batches."""
    import keras

    from train.run.trainer import train

    try:
        with pytest.raises(TrainingError, match=r"loss became NaN or infinite at epoch 0, batch \d+ with lr=1000; try a learning rate 10x lower"):
            train(tiny_config(lr=1e3, mixed_precision="on", epochs=2, experiment="tests"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = _only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags[contract.TAG_STOP_REASON].startswith("non-finite loss at epoch 0 batch")
    assert _steps(run.info.run_id)[contract.LOSS] == [0], "the epoch that diverged is kept"
    assert contract.HISTORY_FILE in {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}


def test_resume_refuses_a_finished_run_and_changed_parameters(tracking_uri, capsys):
    from train.cli import main

    client = MlflowClient()
    experiment = client.create_experiment("resume-checks")
    finished = client.create_run(experiment, tags={contract.TAG_KIND: contract.KIND_TRAIN})
    client.set_terminated(finished.info.run_id, "FINISHED")
    assert main(["--stage", "scratch", "--weights", "none", "--resume", finished.info.run_id]) == 2
    assert "already FINISHED" in capsys.readouterr().err
    killed = client.create_run(experiment, tags={contract.TAG_KIND: contract.KIND_TRAIN})
    client.log_param(killed.info.run_id, "lr", "1e-3")
    client.set_terminated(killed.info.run_id, "KILLED")
    assert main(["--stage", "scratch", "--weights", "none", "--lr", "2e-3", "--resume", killed.info.run_id]) == 2
    assert "resume: lr=0.002 but run" in capsys.readouterr().err


@pytest.mark.slow  # trains for real
def test_a_rate_that_overflows_the_weights_fails_the_run_though_the_loss_stays_finite(tracking_uri):
    """lr=1e300 is inf in float32. With one batch an epoch, that batch's loss (computed before the
    update) is finite; the update makes the weights NaN, and with them validation."""
    from train.run.trainer import train

    with pytest.raises(TrainingError, match=r"(val_loss|val_accuracy|weights) became NaN or infinite at epoch 0 with lr=1e\+300; try a learning rate 10x lower"):
        train(tiny_config(lr=1e300, epochs=1, batch_size=512, experiment="tests"))
    run = _only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags[contract.TAG_STOP_REASON].startswith("non-finite ")
    assert _steps(run.info.run_id)[contract.LOSS] == [0], "the epoch's curves are kept"
    assert not MlflowClient().list_artifacts(run.info.run_id, contract.MODEL_ARTIFACT), "no NaN model is logged"


def test_the_logger_publishes_each_epoch_after_the_checkpoint_whatever_the_callback_order(tmp_path):
    import json
    import uuid

    import keras
    import numpy as np

    from train.run import interrupt
    from train.run.callbacks import EpochMetricsLogger

    images, labels = np.random.default_rng(0).normal(size=(16, 3)), np.arange(16) % 2
    for order in ("checkpoint first", "logger first"):
        run_id = f"order-{uuid.uuid4().hex}"
        published = []

        def log(metrics, step, run_id=run_id, published=published):
            saved = json.loads((interrupt.checkpoint_dir(run_id) / "epochs.json").read_text())
            published.append((step, [row["epoch"] for row in saved], interrupt.completed_epochs(run_id)))

        checkpoint = interrupt.EpochCheckpoint(run_id)
        logger = EpochMetricsLogger(16, log, checkpoint=checkpoint)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        callbacks = [checkpoint, logger] if order == "checkpoint first" else [logger, checkpoint]
        model.fit(images, labels, batch_size=8, epochs=3, verbose=0, callbacks=callbacks)
        interrupt.remove_checkpoint(run_id)
        assert published == [(0, [0], 1), (1, [0, 1], 2), (2, [0, 1, 2], 3)], order


SIGTERM_AFTER_FIT = """
import os, signal, sys, threading
import keras
from tests.conftest import tiny_config
from train.errors import TrainingInterrupted
from train.run.trainer import train

class SigtermAfterFit(keras.callbacks.Callback):
    def on_train_end(self, logs=None):  # then come the metric drain, the outputs, the model and its registration
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()

try:
    train(tiny_config(epochs=1, experiment="tests", register_as="after-fit"), callbacks=[SigtermAfterFit()])
except TrainingInterrupted as stop:
    print(stop, file=sys.stderr)
    sys.exit(128 + stop.signum)
"""


@pytest.mark.slow
def test_sigterm_after_fit_ends_the_run_killed_not_running(tracking_uri):
    env = subprocess_env(tracking_uri, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", SIGTERM_AFTER_FIT], cwd=Path.cwd(), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
    assert "stopped by SIGTERM after training, before the run was complete" in done.stderr
    run = _only_run()
    assert run.info.status == "KILLED"
    assert run.data.tags[contract.TAG_STOP_REASON] == "SIGTERM after training, before the run was complete"
    assert run.info.run_name == "scratch lr=0.001"


def test_a_refusal_from_the_store_fails_at_once_and_is_not_reported_as_an_outage(tracking_uri, capsys):
    """A deleted run refuses metrics (400): waiting 120 s for it to 'come back' would only repeat the refusal."""
    import time

    from train.tracking.metric_buffer import MetricBuffer, MetricsRefused

    client = MlflowClient()
    run = client.create_run(client.create_experiment("refused"))
    client.delete_run(run.info.run_id)
    buffer = MetricBuffer(run.info.run_id)
    started = time.monotonic()
    with pytest.raises(MetricsRefused, match=f"the tracking store refused the metrics of run {run.info.run_id} .*this is not an outage"):
        buffer.log({contract.LOSS: 1.0}, step=0)
    assert time.monotonic() - started < 5
    assert "unavailable" not in capsys.readouterr().err


def test_a_server_error_is_an_outage_the_metrics_wait_out(capsys):
    """503 from the server (a proxy whose backend restarts): the epoch is queued, training goes on."""
    import http.server
    import threading

    from train.tracking.metric_buffer import MetricBuffer

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        buffer = MetricBuffer("0" * 32, MlflowClient(f"http://127.0.0.1:{server.server_address[1]}"))
        buffer.log({contract.LOSS: 1.0}, step=0)
    finally:
        server.shutdown()
        server.server_close()
    assert [step for step, _, _ in buffer.pending] == [0]
    assert "warning: tracking store unavailable" in capsys.readouterr().err


@pytest.mark.slow  # trains for real
def test_ctrl_c_twice_during_an_epoch_ends_the_run_killed(tracking_uri, tmp_path):
    """The second Ctrl-C means "now": no half epoch, no wait, but the run still ends KILLED with its reason."""
    log = tmp_path / "train.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "train", *SLOW_EPOCHS, "--epochs", "6", "--experiment", "tests"], cwd=Path.cwd(),
                                   env=subprocess_env(tracking_uri), stdout=output, stderr=subprocess.STDOUT)
    run_id = _run_id_when_epochs_logged(1, process=process, log=log, timeout=600)  # a busy machine traces for minutes
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 128 + signal.SIGINT, log.read_text()[-3000:]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED", log.read_text()[-3000:]
    assert run.data.tags[contract.TAG_STOP_REASON].startswith("SIGINT during epoch")
    assert "error: interrupted" not in log.read_text()
    assert f"continue it with --resume {run_id}" in log.read_text()


LATE_SECOND_CTRL_C = """
import os, signal, subprocess, sys, time
from train.errors import TrainingInterrupted
from train.run.interrupt import GracefulStop

stops = []
try:
    with GracefulStop(on_stop=stops.append) as stopper:
        os.kill(os.getpid(), signal.SIGINT)
        stopper.check()
except TrainingInterrupted as stop:
    os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C lands after the stop was recorded
    # and more keep coming while the process exits (through Python's finalization, which puts
    # back the default disposition of every signal that had a Python handler)
    spam = f"i=0; while [ $i -lt 400 ] && kill -INT {os.getpid()} 2>/dev/null; do i=$((i+1)); sleep 0.002; done"
    subprocess.Popen(["sh", "-c", spam], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    print("leaving with", 128 + stop.signum, "after", len(stops), "stop")
    sys.exit(128 + stop.signum)
"""


def test_a_second_ctrl_c_after_the_stop_was_recorded_does_not_kill_the_leaving_process():
    """CI once saw the process die by SIGINT (status -2) after printing its stop: Python's own handler,
    back in place once the run had ended, turned the late second Ctrl-C into a KeyboardInterrupt."""
    done = subprocess.run([sys.executable, "-c", LATE_SECOND_CTRL_C], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 128 + signal.SIGINT, done.stderr[-2000:]
    assert done.stdout.strip() == "leaving with 130 after 1 stop"


def test_a_broken_epochs_file_is_ignored_with_a_warning_not_a_traceback(tmp_path, monkeypatch, capsys):
    from train.run import interrupt

    monkeypatch.setenv("LRLAB_CACHE", str(tmp_path))
    folder = interrupt.checkpoint_dir("r1")
    folder.mkdir(parents=True)
    (folder / "epochs.json").write_text('[{"epoch": 0, "loss": 1.')  # killed mid-write, before writes were atomic
    (folder / "training_metadata.json").write_text("{")
    assert interrupt.saved_epochs("r1") == []
    assert interrupt.completed_epochs("r1") == 0
    (folder / "epochs.json").write_text("null")
    assert interrupt.saved_epochs("r1") == []
    assert "is not the checkpoint's list of epochs" in capsys.readouterr().err
    interrupt.write_atomically(folder / "epochs.json", '[{"epoch": 0, "loss": 1.5}]')
    assert interrupt.saved_epochs("r1") == [{"epoch": 0, "loss": 1.5}]
    assert sorted(p.name for p in folder.iterdir()) == ["epochs.json", "training_metadata.json"]  # no partial left


def test_the_run_mlflow_run_made_for_a_resume_is_tagged_empty(tracking_uri, monkeypatch, capsys):
    from train.run.resume import retire_launcher_run

    client = MlflowClient()
    experiment = client.create_experiment("launch")
    resumed, launcher = (client.create_run(experiment).info.run_id for _ in range(2))
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher)
    retire_launcher_run(resumed)
    tags = client.get_run(launcher).data.tags
    assert tags[contract.TAG_KIND] == contract.KIND_LAUNCHER
    assert tags[contract.TAG_STOP_REASON] == f"empty: -P resume={resumed} continued that run instead"
    assert "MLFLOW_RUN_ID" not in os.environ
    assert f"resume: mlflow run's own run {launcher} stays empty" in capsys.readouterr().out
