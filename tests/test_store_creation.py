"""A new SQLite store opened by several processes at once: writers create it whole, readers never create it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import subprocess_env
from train.config import ConfigError
from train.tracking import store as tracking_store

MLFLOW_OWN_CREATION = "import sys; from mlflow.tracking import MlflowClient; MlflowClient(sys.argv[1]).search_experiments(); print('ok')"
LRLAB_WRITER = "from train.tracking.store import connect; connect('writer'); print('ok')"
LRLAB_READER = "from train.tracking.store import require_existing_store; require_existing_store(); print('ok')"


def test_require_existing_store_never_creates_one(tmp_path):
    database = tmp_path / "new.db"
    with pytest.raises(ConfigError, match="does not exist"):
        tracking_store.require_existing_store(f"sqlite:///{database}")
    assert not database.exists()
    database.write_bytes(b"")  # a file some process has just opened: still no store
    with pytest.raises(ConfigError, match="does not exist"):
        tracking_store.require_existing_store(f"sqlite:///{database}")


def test_a_writer_and_a_reader_beside_mlflows_own_creation(tmp_path):
    """`mlflow run` creates a new store by replaying every migration (seconds); an lrlab writer and a
    reader that open the same file meanwhile wait for it rather than migrate it a second time (which
    fails in alembic: 'Online migration expected to match one row')."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = subprocess_env(uri)
    mlflow_own = subprocess.Popen([sys.executable, "-c", MLFLOW_OWN_CREATION, uri], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "mlflow.db").exists() or not (tmp_path / "mlflow.db").stat().st_size:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    others = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for code in (LRLAB_WRITER, LRLAB_READER)]
    for process in (mlflow_own, *others):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and out.strip() == "ok", err[-3000:]
    assert tracking_store.store_complete(tmp_path / "mlflow.db")


def test_writers_starting_together_on_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writers = [subprocess.Popen([sys.executable, "-c", LRLAB_WRITER], env=subprocess_env(uri), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    for process in writers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and out.strip() == "ok", err[-3000:]
    assert tracking_store.store_complete(tmp_path / "mlflow.db")
