"""Sweeps for real: parent + child runs in a SQLite store, dependencies, resume, workers, pruning, registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from sweep.cli import main
from tests.conftest import subprocess_env
from train import contract

SMALL = ["--image_size", "64", "--alpha", "0.35", "--weights", "none", "--batch_size", "16"]
TINY = ["--data", "demo", *SMALL]


def children(parent_id: str):
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", output_format="list")
    return sorted(runs, key=lambda run: run.info.start_time)


def sweep_runs():
    return mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_SWEEP}'", output_format="list")


def history(run_id: str, name: str) -> list[float]:
    return [m.value for m in sorted(MlflowClient().get_metric_history(run_id, name), key=lambda m: m.step)]


@pytest.fixture
def head_then_finetune(tmp_path):
    one_class = tmp_path / "one_class" / "only"
    one_class.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(one_class / "black.png")
    plan = tmp_path / "two_phases.yaml"
    plan.write_text(
        "name: two_phases\n"
        "fixed: {epochs: 1}\n"
        "phases:\n"
        "  - name: heads\n"
        "    fixed: {stage: head}\n"
        f"    grid: {{data: [demo, '{one_class.parent}'], lr: [1.0e-9, 3.0e-3]}}\n"  # the second folder fails its data check
        "  - name: finetune\n"
        "    fixed: {stage: finetune, lr: 1.0e-4}\n"
        "    init_from: {phase: heads}\n"
    )
    return str(plan)


@pytest.mark.slow  # trains for real
def test_plan_with_dependency_runs_in_order_resumes_and_registers(head_then_finetune, tracking_uri, capsys):
    assert main(["--plan", head_then_finetune, *SMALL, "--register-as", "shapes", "--experiment", "sweeps"]) == 1
    out, err = capsys.readouterr()
    assert "error: 2 of 5 sweep children failed: 2x data folder" in err
    assert "sweep [1/5]" in out and "FAILED (data folder" in out and "going on" in out and "ETA" in out

    (parent,) = sweep_runs()
    assert parent.data.tags[contract.TAG_KIND] == contract.KIND_SWEEP
    assert "plan.yaml" in {a.path for a in MlflowClient().list_artifacts(parent.info.run_id)}
    runs = children(parent.info.run_id)
    assert [r.data.tags[contract.TAG_SWEEP_PHASE] for r in runs] == ["heads"] * 4 + ["finetune"]
    heads = [r for r in runs if r.data.tags[contract.TAG_SWEEP_PHASE] == "heads"]
    failed = [r for r in heads if r.info.status == "FAILED"]
    assert len(failed) == 2 and all("needs at least 2 class sub-folders" in r.data.tags[contract.TAG_STOP_REASON] for r in failed)
    finished = [r for r in heads if r.info.status == "FINISHED"]
    assert sorted(float(r.data.params["lr"]) for r in finished) == [1e-9, 3e-3]
    best_accuracy = max(r.data.metrics[contract.BEST_VAL_ACCURACY] for r in finished)
    by_id = {r.info.run_id: r for r in runs}
    finetune = runs[-1]
    assert finetune.info.status == "FINISHED"
    source = by_id[finetune.data.tags[contract.TAG_INIT_RUN_ID]]
    assert source in finished and source.data.metrics[contract.BEST_VAL_ACCURACY] == best_accuracy, "starts from the best head"
    assert finetune.data.params["init_model"] == f"runs:/{source.info.run_id}/model"
    assert finetune.info.start_time >= max(r.info.end_time for r in heads)

    client = MlflowClient()
    def registered(alias):
        return by_id[client.get_model_version_by_alias("shapes", alias).run_id].data.metrics[contract.BEST_VAL_ACCURACY]

    assert registered(contract.CHAMPION_ALIAS) == max(best_accuracy, finetune.data.metrics[contract.BEST_VAL_ACCURACY])
    assert registered("head") == best_accuracy
    assert client.get_model_version_by_alias("shapes", "finetune").run_id == finetune.info.run_id

    # The same command again: finished children are skipped, only the failed ones run again.
    assert main(["--plan", head_then_finetune, *SMALL, "--experiment", "sweeps"]) == 1
    out = capsys.readouterr().out
    assert out.count("skipped a configuration (finished earlier)") == 3
    second = max(sweep_runs(), key=lambda r: r.info.start_time)
    retried = children(second.info.run_id)
    assert len(retried) == 2 and all(r.info.status == "FAILED" for r in retried)
    study = parent.data.tags[contract.TAG_SWEEP_STUDY]
    everything = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.{contract.TAG_SWEEP_STUDY} = '{study}' AND attributes.status = 'FINISHED'", output_format="list")
    assert len([r for r in everything if r.data.tags.get(contract.TAG_KIND) == contract.KIND_TRAIN]) == 3


@pytest.mark.slow
def test_two_workers_split_a_grid_without_running_any_configuration_twice(tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    command = [sys.executable, "-m", "sweep", "--lrs", "1e-3,2e-3,3e-3,4e-3,5e-3", "--stages", "scratch", "--epochs", "1", *TINY,
               "--storage", storage, "--experiment", "workers"]
    logs = [open(tmp_path / f"worker{i}.log", "w+") for i in range(2)]
    workers = [subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(tracking_uri), stdout=log, stderr=subprocess.STDOUT) for log in logs]
    for worker, log in zip(workers, logs, strict=True):
        assert worker.wait(timeout=900) == 0, log.seek(0) or log.read()[-3000:]
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'", output_format="list")
    lrs = sorted(float(r.data.params["lr"]) for r in runs)
    assert lrs == [1e-3, 2e-3, 3e-3, 4e-3, 5e-3], "each configuration exactly once"
    assert all(r.info.status == "FINISHED" for r in runs)
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 2, "both workers trained a share"


@pytest.mark.slow
def test_sigterm_before_a_child_trains_ends_the_sweep_killed_not_running(tmp_path, tracking_uri):
    """The signal lands while the sweep sets up (TensorFlow's import, data, the model), outside any
    fit(): the default handler would kill the process and leave the parent RUNNING for ever."""
    command = [sys.executable, "-m", "sweep", "--lrs", "1e-3,1e-4", "--stages", "scratch", "--epochs", "1", *TINY, "--experiment", "stopped"]
    with open(tmp_path / "sweep.log", "w+") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(tracking_uri), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while not sweep_runs() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=120) == 128 + signal.SIGTERM, log.seek(0) or log.read()[-3000:]
        log.seek(0)
        output = log.read()
    (parent,) = sweep_runs()
    assert parent.info.status == "KILLED" and "resume" in parent.data.tags[contract.TAG_STOP_REASON]
    assert all(child.info.status == "KILLED" for child in children(parent.info.run_id)), "no child left RUNNING"
    assert "sweep interrupted" in output and "Traceback" not in output, output[-3000:]


@pytest.mark.slow
def test_pruning_stops_a_hopeless_learning_rate_and_keeps_its_curve(tracking_uri, capsys):
    epochs = 6  # room to prune before the last epoch: on the demo's own val/ split 1e-9 can look no worse until epoch 3
    assert main(["--lrs", "3e-3,1e-9", "--stages", "scratch", "--epochs", str(epochs), *TINY, "--pruning", "median", "--prune-startup", "1", "--prune-warmup", "1"]) == 0
    (parent,) = sweep_runs()
    runs = {float(r.data.params["lr"]): r for r in children(parent.info.run_id)}
    best, hopeless = runs[3e-3], runs[1e-9]
    assert len(history(best.info.run_id, contract.VAL_ACCURACY)) == epochs
    assert contract.TAG_PRUNED not in best.data.tags
    assert hopeless.data.tags[contract.TAG_PRUNED] == "true"
    assert "pruned by Optuna MedianPruner" in hopeless.data.tags[contract.TAG_STOP_REASON]
    kept = history(hopeless.info.run_id, contract.VAL_ACCURACY)
    assert 1 <= len(kept) < epochs, "stopped early, curve kept"
    assert "1 pruned" in capsys.readouterr().out


@pytest.mark.slow
def test_mlflow_run_sweep_entry_point_passes_plan_overrides(tmp_path, tracking_uri):
    from tests.conftest import REPO

    command = ["mlflow", "run", str(REPO), "--env-manager", "local", "-e", "sweep", "--experiment-name", "entry",
               "-P", "lrs=1e-3,3e-3", "-P", "stages=scratch", "-P", "epochs=1", "-P", "image_size=64", "-P", "alpha=0.35", "-P", "weights=none"]
    done = subprocess.run(command, cwd=tmp_path, env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (parent,) = sweep_runs()
    assert parent.info.status == "FINISHED"
    runs = children(parent.info.run_id)
    assert sorted(float(r.data.params["lr"]) for r in runs) == [1e-3, 3e-3]
    assert {r.data.params["image_size"] for r in runs} == {"64"}


@pytest.mark.slow  # trains for real
def test_a_child_that_diverges_leaves_no_checkpoint_to_resume_from_nan_weights(tracking_uri, capsys):
    """lr=1e3 in float16 overflows within a few batches; the child's checkpoint (NaN weights) goes."""
    import keras

    from train.cli import main as train_main
    from train.run.interrupt import checkpoint_dir

    same = ["--epochs", "2", *TINY, "--mixed_precision", "on"]
    try:
        assert main(["--stages", "scratch", "--lrs", "1000", *same, "--experiment", "nan"]) == 1
    finally:
        keras.mixed_precision.set_global_policy("float32")
    (parent,) = sweep_runs()
    (child,) = children(parent.info.run_id)
    assert child.info.status == "FAILED" and "loss became NaN" in child.data.tags[contract.TAG_STOP_REASON]
    assert not checkpoint_dir(child.info.run_id).exists(), "a NaN checkpoint stays behind"
    capsys.readouterr()
    assert train_main(["--stage", "scratch", "--lr", "1000", *same, "--resume", child.info.run_id]) == 2
    assert f"run {child.info.run_id} has no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_during_a_child_keeps_its_checkpoint_artifact_and_removes_the_local_copy(tmp_path, tracking_uri):
    """The next launch trains the configuration afresh in a new child: the local checkpoint is only disk used."""
    from train.run.interrupt import checkpoint_dir

    command = [sys.executable, "-m", "sweep", "--lrs", "1e-3", "--stages", "scratch", "--epochs", "4", *TINY, "--experiment", "stopped"]
    with open(tmp_path / "sweep.log", "w+") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(tracking_uri), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        child = None
        while process.poll() is None and time.monotonic() < deadline:
            parents = sweep_runs()
            child = next(iter(children(parents[0].info.run_id)), None) if parents else None
            if child and MlflowClient().get_metric_history(child.info.run_id, contract.LOSS):
                break  # epoch 0 is checkpointed and logged
            time.sleep(0.5)
        assert process.poll() is None, log.seek(0) or log.read()[-3000:]
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=300) == 128 + signal.SIGTERM, log.seek(0) or log.read()[-3000:]
    run = MlflowClient().get_run(child.info.run_id)
    assert run.info.status == "KILLED"
    assert "checkpoint/latest.weights.h5" in {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "checkpoint")}
    assert not checkpoint_dir(run.info.run_id).exists()


def test_a_study_named_with_an_apostrophe_finds_its_own_runs(tmp_path, tracking_uri, capsys):
    """`--study "bob's sweep"` went unescaped into MLflow filters: the sweep died on an invalid filter."""
    from sweep.filters import quoted

    one_class = tmp_path / "one_class" / "only"
    one_class.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(one_class / "black.png")  # the child fails its data check, before TensorFlow
    study = "bob's sweep"
    assert main(["--stages", "head", "--lrs", "1e-3", "--data", str(one_class.parent), *SMALL, "--study", study, "--register-as", "bobs", "--experiment", "quotes"]) == 1
    err = capsys.readouterr().err
    assert "no finished run to register" in err
    assert err.strip().splitlines()[-1].startswith("error: 1 of 1 sweep children failed: data folder"), err  # issue 19: it exited 0
    (parent,) = sweep_runs()
    assert parent.data.tags[contract.TAG_SWEEP_STUDY] == study
    found = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.{contract.TAG_SWEEP_STUDY} = {quoted(study)}", output_format="list")
    assert len(found) == 2  # the parent and its one (failed) child


def test_a_bug_in_lrlab_stops_the_sweep_loudly_and_a_failed_record_still_releases_the_claim(tmp_path, tracking_uri):
    """Issue 19: `except Exception` around a child also swallowed programming errors (every child then
    failed the same way, and the sweep exited 0); and when recording a failure failed, the claim stayed
    `running`, so every other worker waited for it."""
    import optuna
    from mlflow.exceptions import MlflowException

    from sweep import runner
    from sweep.claims import FAILED, Claims
    from sweep.plan import Phase, Plan

    broken = Plan("bug", [Phase("p", fixed={"stage": "scratch", "data": "demo", "epochs": [1]}, grid={"lr": [1e-3, 1e-4]})])  # a plan no YAML gives
    with pytest.raises(TypeError):
        runner.run_sweep(runner.SweepOptions(broken, experiment="bugs"))
    (parent,) = sweep_runs()
    assert parent.info.status == "FAILED"
    (child,) = children(parent.info.run_id)  # the first child, not both: the sweep stopped
    assert child.info.status == "FAILED" and child.data.tags[contract.TAG_STOP_REASON].startswith("failed: ")

    claims = Claims("s", f"sqlite:///{tmp_path / 'claims.db'}")
    assert claims.claim("k")
    study = optuna.create_study()
    with pytest.raises(MlflowException):  # the run to record it on is not there: recording fails
        runner._give_up_child("0" * 32, "k", RuntimeError("out of memory"), claims, study, study.ask())
    assert claims.states(["k"]) == {"k": FAILED}
    claims.close()


@pytest.mark.slow  # trains for real: one child, stopped once another worker takes its claim over
def test_a_child_whose_claim_another_worker_took_over_stops_and_says_so(tmp_path, tracking_uri, capsys):
    """Issue 19: after an outage longer than the stale window another worker takes the claim over, and
    this worker trained on: two FINISHED runs of one configuration inflated n."""
    import threading

    import sqlalchemy as sa

    from sweep import runner
    from sweep.cli import build_plan

    storage = f"sqlite:///{tmp_path / 'claims.db'}"
    plan = build_plan("", {"stage": "scratch", "lr": "1e-3", "epochs": "6", "data": "demo", "image_size": "64", "alpha": "0.35", "batch_size": "16"}, 1, 0)
    stolen = threading.Event()

    def other_worker():  # what a worker that found the claim stale does: make it its own
        engine = sa.create_engine(storage)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not stolen.is_set():
            time.sleep(0.5)
            run = next(iter(mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'", output_format="list")), None)
            if run and MlflowClient().get_metric_history(run.info.run_id, contract.LOSS):  # mid-training: epoch 0 is logged
                with engine.begin() as connection:
                    stolen.set() if connection.execute(sa.text("UPDATE lrlab_sweep_claims SET owner = 'other:1:1'")).rowcount else None
        engine.dispose()

    thief = threading.Thread(target=other_worker)
    thief.start()
    result = runner.run_sweep(runner.SweepOptions(plan, storage=storage, experiment="lost", stale_seconds=2))
    thief.join()
    assert stolen.is_set()
    (child,) = [MlflowClient().get_run(run_id) for run_id in result.lost]
    assert not result.trained and not result.failed
    assert child.info.status == "KILLED" and "taken over by another worker" in child.data.tags[contract.TAG_STOP_REASON]
    assert len(history(child.info.run_id, contract.LOSS)) < 6, "it stopped, it did not train to the end"
    out = capsys.readouterr()
    assert "STOPPED (its claim went to another worker" in out.out and "this child stops" in out.err
