"""Shared test set-up: real MLflow stores in tmp_path, the real demo data, tiny models.

Every test runs the real code, only smaller: 64 px images, MobileNetV2 alpha 0.35, the
demo set (288 train, 72 val, 60 test images), one to three epochs, weights=none or a weights file the test writes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# One demo data set and converted-image cache for the whole session, outside the repo.
os.environ.setdefault("LRLAB_CACHE", str(Path(os.environ.get("PYTEST_CACHE_ROOT", "/tmp")) / "lrlab-test-cache"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

TINY = {"data": "demo", "image_size": 64, "alpha": 0.35, "weights": "none", "epochs": 1, "batch_size": 32, "lr": 1e-3}


def tiny_config(**overrides):
    from train.config import TrainConfig

    return TrainConfig(**{**TINY, "stage": "scratch", "experiment": "tests", **overrides})


def tiny_args(**overrides) -> list[str]:
    """The same tiny configuration as `python -m train` flags (`--image-size 64 ...`), with `overrides`."""
    values = {**TINY, "stage": "scratch", **overrides}
    return [part for name, value in values.items() for part in (f"--{name.replace('_', '-')}", str(value))]


def pytest_configure(config):
    """A bare `pytest` runs the fast suite (pyproject's addopts deselect slow, browser and postgres
    tests); `pytest tests/test_x.py` or `pytest tests/test_x.py::test_y` runs what it names, markers
    aside, rather than deselect it all and exit 5 (no tests ran). An explicit -m still decides."""
    explicit_marks = any(arg.startswith("-m") for arg in config.invocation_params.args)
    if config.args_source == pytest.Config.ArgsSource.ARGS and not explicit_marks:
        config.option.markexpr = ""


# `make test` runs two pytest-xdist workers, a file per worker at a time (--dist loadfile), in this
# order (--no-loadscope-reorder): the files that train the most start first, so the rest fill in
# beside them rather than after. Measured (seconds of test time per file, `--durations=0`):
# faults 431 (about 320 since its resume test pre-empts one run twice instead of two runs once, and
# trains no uninterrupted run beside it: 114 s less side by side), sweep 317, team_server 364 (about
# 250 since its server caches checked passwords: 130 s less side by side), model_pool 246, outage 138,
# data_cache 131, lr_find 116, training 105, app_browser 96, data_test_split 82, racing 76, app_training_runs 71.
LONGEST_FILES = ("test_faults.py", "test_sweep.py", "test_team_server.py", "test_model_pool.py", "test_outage.py", "test_data_cache.py",
                 "test_lr_find.py", "test_training.py", "test_app_browser.py", "test_data_test_split.py", "test_racing.py",
                 "test_app_training_runs.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


# Lines that are not the command's own: MLflow's INFO log, and TensorFlow's C++ start-up log (absl
# writes it to stderr before logging is set up, whatever TF_CPP_MIN_LOG_LEVEL says).
NOT_OURS = re.compile(r" INFO |^WARNING: All log messages before absl::InitializeLog\(\)|^[IWE]\d{4} \d\d:\d\d:\d\d")


def error_line(stderr: str) -> str:
    """The one error line a command printed (what MLflow and TensorFlow log left aside)."""
    lines = [line for line in stderr.strip().splitlines() if not NOT_OURS.search(line)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch):
    """A fresh SQLite tracking store for one test."""
    uri = sqlite_uri(tmp_path)
    monkeypatch.chdir(tmp_path)  # first: the store MLflow caches per URI resolves ./mlruns once, when use_store opens it
    with use_store(uri, monkeypatch):
        yield uri


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite tracking store (and working folder) shared by the tests of a module."""
    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # before use_store, or the artifacts land in the checkout's ./mlruns (see tracking_uri)
        with use_store(sqlite_uri(folder), patch):
            yield folder


LEAKED_RUN_ENV = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@pytest.fixture(autouse=True)
def forget_mlflow_run_env():
    """mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID into os.environ, and nothing takes it
    back: without this, whichever test runs next (in another order, or on another xdist worker)
    inherits an experiment ID from a store it does not use."""
    yield
    for name in LEAKED_RUN_ENV:
        os.environ.pop(name, None)


@contextlib.contextmanager
def use_store(uri: str, monkeypatch):
    """Point both the environment and MLflow's in-process default at `uri` (train() sets the latter)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for leaked in LEAKED_RUN_ENV:
        monkeypatch.delenv(leaked, raising=False)  # mlflow.set_experiment exports the ID; the next store lacks it
    mlflow.set_tracking_uri(uri)
    from train.tracking.store import _create_sqlite_tables_once

    # Create the tables before any subprocess races for them, as a copy of the empty-store template: 0.1 s, not 6-9 s a store.
    _create_sqlite_tables_once(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(None)


TINY_MODEL = "tiny"  # the registered name of the shared tiny model; its alias is its stage, `scratch`


@dataclass(frozen=True)
class TrainedStore:
    folder: Path  # mlflow.db and mlruns/, the template: copy it with copy_store, never write to it
    run_id: str
    version: int


@pytest.fixture(scope="session")
def tiny_trained_store(tmp_path_factory) -> TrainedStore:
    """One tiny scratch run (1 epoch, batch 16, lr 3e-3), registered as `tiny` (alias `scratch`),
    trained once per pytest process: the tests that only need some trained and registered model
    copy this store (copy_store) instead of training one of their own."""
    from train.run.trainer import train

    folder = tmp_path_factory.mktemp("tiny-trained-store")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # before use_store: the run's artifacts belong in the template, to be copied with it
        with use_store(sqlite_uri(folder), patch):
            result = train(tiny_config(epochs=1, batch_size=16, lr=3e-3, register_as=TINY_MODEL))
    for name in LEAKED_RUN_ENV:
        os.environ.pop(name, None)
    return TrainedStore(folder, result.run_id, result.registered_version)


def copy_store(template: Path, folder: Path) -> str:
    """Copy a SQLite store and its artifacts into `folder`; return its URI. MLflow keeps absolute
    artifact paths in its tables, so every text value naming the template is rewritten to name the
    copy (a run logged into the copy then writes under `folder`, never into the template)."""
    shutil.copytree(template, folder, dirs_exist_ok=True)
    old, new = str(template), str(folder)
    with contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as db, db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in [c[1] for c in db.execute(f"PRAGMA table_info('{table}')") if (c[2] or "").upper().startswith(("VARCHAR", "TEXT"))]:
                db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?) > 0', (old, new, old))
    return sqlite_uri(folder)


def subprocess_env(tracking_uri: str, **extra) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **extra}
    for leaked in LEAKED_RUN_ENV:
        env.pop(leaked, None)
    return env


def run_train_cli(args: list[str], tracking_uri: str, timeout: int = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m train ARGS` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "train", *args],
        cwd=cwd or Path.cwd(),  # the test's tmp_path: MLflow puts a new experiment's artifacts in ./mlruns
        env=subprocess_env(tracking_uri),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mlflow_run(params: dict, tracking_uri: str, entry_point: str = "main", timeout: int = 600, experiment: str = "tests") -> subprocess.CompletedProcess:
    """The real `mlflow run . --env-manager local -e ENTRY -P k=v ...`."""
    command = [str(VENV_BIN / "mlflow"), "run", str(REPO), "--env-manager", "local", "-e", entry_point, "--experiment-name", experiment]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return subprocess.run(command, cwd=Path.cwd(), env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=timeout)
