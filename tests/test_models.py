"""Model factory details that a training run alone would not reveal."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from tests.app_fixtures import free_port
from tests.conftest import tiny_config
from train.model.build import IMAGENET_STDDEV_RGB, all_layers, auto_bn_momentum, build_model, unfreeze_for_finetune

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)


def test_efficientnet_from_a_weights_file_normalises_like_imagenet(tmp_path):
    """Keras adds the ImageNet std correction only for weights='imagenet'; a file must give the same model."""
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    normalization = next(layer for layer in base.layers if isinstance(layer, layers.Normalization))
    # What Keras' own efficientnetb0_notop.h5 holds: the mean, and the std where the variance belongs.
    normalization.adapt_mean.assign(np.array(IMAGENET_MEAN_RGB, "float32"))
    normalization.adapt_variance.assign(np.array(IMAGENET_STDDEV_RGB, "float32"))
    path = tmp_path / "efficientnetb0_notop.weights.h5"
    base.save_weights(path)

    model = build_model(3, tiny_config(model="efficientnet_b0", stage="full", weights=str(path)), None)
    loaded_base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    loaded_norm = next(layer for layer in loaded_base.layers if isinstance(layer, layers.Normalization))
    probe = keras.Model(loaded_base.input, loaded_norm.output)
    pixels = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3)).astype("float32")
    expected = (pixels / 255 - np.array(IMAGENET_MEAN_RGB)) / np.array(IMAGENET_STDDEV_RGB)
    np.testing.assert_allclose(probe.predict(pixels, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_a_weights_file_for_another_architecture_is_a_clear_error(tmp_path, recwarn):
    other = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3), alpha=0.35)
    path = tmp_path / "mobilenet.weights.h5"
    other.save_weights(path)
    with pytest.raises(ValueError, match="does not fit efficientnet_b0"):
        build_model(3, tiny_config(model="efficientnet_b0", stage="head", weights=str(path)), None)
    assert not [w for w in recwarn if "Skipping" in str(w.message)], "one line, not a warning per layer group"


@pytest.mark.parametrize(("steps", "momentum"), [(9, 0.9), (100, 0.9), (200, 0.95), (5000, 0.99)])
def test_auto_bn_momentum(steps, momentum):
    assert auto_bn_momentum(steps) == pytest.approx(momentum)


def test_scratch_applies_the_momentum_to_every_batch_norm():
    model = build_model(6, tiny_config(stage="scratch"), 0.9)
    momenta = {layer.momentum for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization)}
    assert momenta == {0.9}


def test_head_freezes_the_base_and_finetune_unfreezes_all_but_batch_norm():
    model = build_model(6, tiny_config(stage="head"), None)
    assert len(model.trainable_weights) == 2  # the Dense kernel and bias
    unfreeze_for_finetune(model)
    bn = [layer for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert len(model.trainable_weights) > 40


def test_models_take_raw_pixels_and_return_float32_probabilities():
    model = build_model(4, tiny_config(stage="full", model="efficientnet_b0"), None)
    out = model.predict(np.full((2, 64, 64, 3), 255.0, "float32"), verbose=0)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-5)


KERAS_LOADS_OUR_FILE = """
import sys, h5py, keras, numpy as np
from keras.src.applications import efficientnet, mobilenet_v2
from keras.src.backend.config import keras_home
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group
from train.model import weights

assert str(weights.keras_models_dir()) == keras_home() + "/models", (weights.keras_models_dir(), keras_home())
assert weights.MOBILENET_V2_URL == mobilenet_v2.BASE_WEIGHT_PATH and weights.EFFICIENTNET_URL == efficientnet.BASE_WEIGHTS_PATH
assert weights.EFFICIENTNET_B0_NO_TOP_MD5 == efficientnet.WEIGHTS_HASHES["b0"][1]
source = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
name, url, _ = weights.imagenet_file("mobilenet_v2", 0.35, 96)
weights.keras_models_dir().mkdir(parents=True)
with h5py.File(weights.keras_models_dir() / name, "w") as file:  # the legacy format Keras' own files are in
    save_weights_to_hdf5_group(file, source)
# Offline, Keras would fail to download a file of any other name: it must find ours in its cache.
loaded = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights="imagenet")
assert all(np.array_equal(a, b) for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True))
print("ok", name)
"""


def test_imagenet_file_names_and_cache_are_the_ones_keras_uses(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras-home"), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-c", KERAS_LOADS_OUR_FILE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in done.stdout


class WeightsMirror:
    """A loopback HTTP server standing in for Keras' download host: serves `files`, 404 for the rest, or hangs."""

    def __init__(self, files: dict[str, bytes], hang: bool = False):
        import http.server
        import threading

        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                if hang:
                    mirror.release.wait(30)
                    return
                body = files.get(self.path.lstrip("/"))
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, *args):
                pass

        self.release = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_missing_imagenet_weights_are_fetched_once_into_the_keras_cache(tmp_path, monkeypatch):
    from train.model import weights

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    config = tiny_config(stage="full", weights="imagenet", alpha=1.0, image_size=160)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"
    with WeightsMirror({name: b"\x89HDF\r\n\x1a\n weights"}) as mirror:
        assert weights.ensure_imagenet_weights(config, base_url=mirror.url) == tmp_path / "models" / name
        assert weights.ensure_imagenet_weights(config, base_url=mirror.url) == tmp_path / "models" / name
        assert mirror.requests == [f"/{name}"], "the second run finds the file in the cache"
    assert (tmp_path / "models" / name).read_bytes() == b"\x89HDF\r\n\x1a\n weights"
    assert weights.ensure_imagenet_weights(tiny_config(stage="scratch", weights="imagenet")) is None, "scratch loads no weights"


@pytest.mark.parametrize("failure", ["not_found", "refused", "hangs"])
def test_a_failed_weights_download_is_one_line_naming_the_file_the_folder_and_weights_none(failure, tmp_path, monkeypatch):
    import time

    from train.config import ConfigError
    from train.model import weights

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    config = tiny_config(stage="head", weights="imagenet", model="efficientnet_b0")
    started = time.monotonic()
    with WeightsMirror({}, hang=failure == "hangs") as mirror, pytest.raises(ConfigError) as raised:
        url = f"http://127.0.0.1:{free_port()}/" if failure == "refused" else mirror.url
        weights.ensure_imagenet_weights(config, base_url=url, timeout=1)
    message = str(raised.value)
    assert "\n" not in message and time.monotonic() - started < 10
    assert f"ImageNet weights for efficientnet_b0 are not in {tmp_path / 'models'}" in message
    assert "copy efficientnetb0_notop.h5 there" in message and "-P weights=/path/to/efficientnetb0_notop.h5" in message
    assert message.endswith("or train without them: -P weights=none")
    assert not list((tmp_path / "models").glob("*")), "no partial file left where Keras would trust it"
