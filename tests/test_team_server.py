"""The team set-up: `mlflow server` on PostgreSQL with an artifact destination and basic auth.

PostgreSQL is Debian's, started by tests/servers.py on a free loopback port.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient

from tests.app_fixtures import mlflow_server
from tests.conftest import error_line, subprocess_env, tiny_args
from tests.servers import basic_auth_env, postgres_server
from train import contract

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ADMIN = ("admin", "admin-password-1234")
ALICE = ("alice", "alice-password-1234")
BOB = ("bob", "bob-password-1234")
EPOCHS = 2
TINY = tiny_args(epochs=EPOCHS)


def as_user(user):
    return {"MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1]}


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("team")
    env = basic_auth_env(folder, ADMIN, "team-test-secret")
    with postgres_server() as database:
        backend = database("mlflow")
        artifacts = folder / "artifacts"
        with mlflow_server(backend, app_name="basic-auth", env=env, workdir=folder, extra_args=("--artifacts-destination", str(artifacts))) as uri:
            with pytest.MonkeyPatch.context() as patch:
                for key, value in as_user(ADMIN).items():
                    patch.setenv(key, value)
                users = get_app_client("basic-auth", tracking_uri=uri)
                users.create_user(*ALICE)
                users.create_user(*BOB)
            yield uri, artifacts, database


def train_at_once(n: int, uri: str, experiment: str, cwd, extra_env=None):
    """Start n `python -m train` processes together; return their (exit code, output)."""
    processes = []
    for seed in range(n):
        log = open(cwd / f"train-{experiment}-{seed}.log", "w+")
        env = {**subprocess_env(uri), **(extra_env or {})}
        processes.append((subprocess.Popen([sys.executable, "-m", "train", *TINY, "--seed", str(seed), "--experiment", experiment],
                                           cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    results = []
    for process, log in processes:
        code = process.wait(timeout=900)
        log.seek(0)
        results.append((code, log.read()))
        log.close()
    return results


def assert_all_complete(client: MlflowClient, experiment: str, results, n: int):
    for code, output in results:
        assert code == 0, output[-3000:]
        assert "database is locked" not in output
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == n
    for run in runs:
        assert run.info.status == "FINISHED"
        for name in contract.EPOCH_METRICS:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, name))
            assert steps == list(range(EPOCHS)), (run.info.run_id, name, steps)
    return runs


def test_two_trainings_at_once_on_postgres_behind_auth(team_server, tmp_path, monkeypatch):
    """Two at once are enough to race (the run inserts, the same data set logged twice): each more costs a minute."""
    uri, artifacts, _ = team_server
    results = train_at_once(2, uri, "team", tmp_path, as_user(ALICE))
    for key, value in as_user(ALICE).items():
        monkeypatch.setenv(key, value)
    runs = assert_all_complete(MlflowClient(uri), "team", results, 2)
    logged = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"model.keras", contract.HISTORY_FILE, contract.DATA_REPORT_FILE} <= logged, "artifacts land in --artifacts-destination"
    assert {run.data.tags["mlflow.user"] for run in runs} == {ALICE[0]}


def test_two_trainings_at_once_on_one_sqlite_file(tmp_path):
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    results = train_at_once(2, uri, "team", tmp_path)
    assert_all_complete(MlflowClient(uri), "team", results, 2)


def test_wrong_password_is_one_line_before_training(team_server, tmp_path):
    uri, _, _ = team_server
    env = {**subprocess_env(uri), **as_user((ALICE[0], "wrong"))}
    done = subprocess.run([sys.executable, "-m", "train", *TINY], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert error_line(done.stderr) == f"error: tracking server {uri} refused the credentials of 'alice' (401 Unauthorized); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
    assert "Traceback" not in done.stderr


def test_user_without_edit_permission_gets_one_line(team_server, tmp_path, monkeypatch):
    uri, _, _ = team_server
    for key, value in as_user(ADMIN).items():
        monkeypatch.setenv(key, value)
    MlflowClient(uri).create_experiment("admins-only")  # bob may read it (default READ), not write
    env = {**subprocess_env(uri), **as_user(BOB)}
    done = subprocess.run([sys.executable, "-m", "train", *TINY, "--experiment", "admins-only"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_line(done.stderr).startswith(f"error: tracking server {uri} denied user 'bob' access (403 Forbidden); ask its administrator for EDIT permission")
    assert "Traceback" not in done.stderr
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == ADMIN[0]


def test_sweep_on_postgres_storage_authenticates_and_registers_behind_auth(team_server, tmp_path, monkeypatch):
    """The multi-machine set-up on one machine: Optuna and the claims in PostgreSQL, runs behind auth."""
    uri, _, database = team_server
    env = {**subprocess_env(uri), **as_user(ALICE)}
    command = [sys.executable, "-m", "sweep", "--lrs", "1e-3", "--stages", "scratch", "--epochs", "1", "--data", "demo", "--image_size", "64",
               "--alpha", "0.35", "--weights", "none", "--experiment", "team-sweep", "--register-as", "team-model", "--storage", database("optuna")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for key, value in as_user(ALICE).items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("team-sweep").experiment_id])
    # The demo holds out test/: the sweep's end evaluates its best once there (kind=evaluate), behind auth too.
    assert sorted(run.data.tags[contract.TAG_KIND] for run in runs) == [contract.KIND_EVALUATE, contract.KIND_SWEEP, contract.KIND_TRAIN]
    assert all(run.info.status == "FINISHED" for run in runs)
    assert client.get_model_version_by_alias("team-model", contract.CHAMPION_ALIAS).version == "1"
    import sqlalchemy as sa

    with sa.create_engine(database("optuna")).connect() as connection:
        claims = connection.execute(sa.text("SELECT state FROM lrlab_sweep_claims")).scalars().all()
    assert sorted(claims) == ["done", "done", "done"]  # the configuration, the registration and the test-split evaluation
