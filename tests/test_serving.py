"""`mlflow models serve -m models:/NAME@champion --env-manager local` answers like the model.

The session's tiny registered model (tests/conftest.py) gets the alias `champion`, and the
real MLflow scoring server is started as a subprocess on a free loopback port. Real demo
images (raw RGB 0-255, the model's signature) are posted to /invocations as
{"inputs": [...]}; the answer must equal mlflow.pyfunc.load_model(...).predict on the same
images and pick the same classes as the Keras model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_MODEL, VENV_BIN, copy_store, subprocess_env, use_store

pytestmark = pytest.mark.slow

MODEL_NAME = TINY_MODEL
MODEL_URI = f"models:/{MODEL_NAME}@champion"
START_SECONDS = 240  # TensorFlow's import and the model load, on a busy 2-core machine


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _demo_images(per_class: int, image_size: int) -> np.ndarray:
    """Real demo images, decoded and resized as training does: float32 RGB 0-255."""
    import tensorflow as tf

    from train.data.demo import CLASSES, demo_folder
    from train.data.pipeline import decode_image

    paths = [path for name in sorted(CLASSES) for path in sorted((demo_folder() / "train" / name).glob("*.png"))[:per_class]]
    return np.stack([decode_image(tf.constant(str(path)), image_size).numpy() for path in paths]).astype(np.float32)


def _wait_until_ready(server: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"mlflow models serve did not answer /ping within {START_SECONDS} s:\n{log.read_text()[-4000:]}")


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (mlflow's CLI and the uvicorn it starts), then SIGKILL."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=20)


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch, tiny_trained_store):
    """A copy of the session's store with its tiny registered model (trained once, not here)."""
    uri = copy_store(tiny_trained_store.folder, tmp_path / "store")
    with use_store(uri, monkeypatch):
        monkeypatch.chdir(tmp_path)
        yield uri


def test_served_champion_predicts_like_pyfunc_and_keras(tracking_uri, tmp_path, tiny_trained_store):
    MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", str(tiny_trained_store.version))
    assert MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").run_id == tiny_trained_store.run_id

    images = _demo_images(per_class=2, image_size=64)  # 12 images, 2 of each class
    expected = np.asarray(mlflow.pyfunc.load_model(MODEL_URI).predict(images))
    keras_classes = mlflow.keras.load_model(MODEL_URI).predict(images, verbose=0).argmax(axis=1)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", MODEL_URI, "--env-manager", "local", "-p", str(port), "--host", "127.0.0.1"]
    with open(log, "w") as output:
        server = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(tracking_uri), stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_ready(server, url, log)
        request = urllib.request.Request(
            url + "/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            assert answer.status == 200
            served = np.asarray(json.loads(answer.read())["predictions"], dtype=np.float64)
    finally:
        _stop(server)

    assert served.shape == (12, 6)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    assert served.argmax(axis=1).tolist() == keras_classes.tolist()
    assert served.sum(axis=1) == pytest.approx(np.ones(12), abs=1e-4)
