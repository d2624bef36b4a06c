"""ImageNet weights: the file Keras would download, found in its cache or fetched before a run starts.

Keras downloads `weights=imagenet` on first use, deep inside building the model: offline,
that is a long traceback after TensorFlow has loaded and, under `mlflow run`, after the
run exists. Preflight looks for the same file, by Keras' own name, in Keras' own cache
(`~/.keras/models`, or `$KERAS_HOME/models`), and fetches it there with a short timeout
when it is missing, so a machine without internet gets one line saying which file to put
where. The names and URLs are Keras 3's; tests/test_models.py compares them with Keras.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.request
from pathlib import Path

from train.config import ConfigError, TrainConfig

MOBILENET_V2_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
EFFICIENTNET_URL = "https://storage.googleapis.com/keras-applications/"
EFFICIENTNET_B0_NO_TOP_MD5 = "50bc09e76180e00e4465e1a485ddc09d"  # Keras checks it, and downloads again on a mismatch
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)  # other image sizes get the 224 px weights
DOWNLOAD_TIMEOUT_SECONDS = 20  # per connection attempt and per read: a dead network fails in seconds, a slow one still downloads


def uses_imagenet(config: TrainConfig) -> bool:
    """scratch trains from random weights and finetune starts from a model: neither loads ImageNet."""
    return config.weights == "imagenet" and config.stage in ("full", "head")


def imagenet_file(model: str, alpha: float, image_size: int) -> tuple[str, str, str | None]:
    """(file name, URL, MD5 or None) of the include_top=False ImageNet weights Keras loads."""
    if model == "efficientnet_b0":
        name = "efficientnetb0_notop.h5"
        return name, EFFICIENTNET_URL + name, EFFICIENTNET_B0_NO_TOP_MD5
    rows = image_size if image_size in MOBILENET_V2_SIZES else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    return name, MOBILENET_V2_URL + name, None


def keras_models_dir() -> Path:
    """Where Keras' get_file caches weights (keras/src/backend/config.py: KERAS_HOME, else ~/.keras or /tmp/.keras)."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]) / "models"
    home = Path.home()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras" / "models"


def ensure_imagenet_weights(config: TrainConfig, base_url: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> Path | None:
    """The cached weights file the run will load (downloaded now if missing), or None when it loads none.

    `base_url` replaces the host Keras downloads from (a mirror, or a test's local server).
    """
    if not uses_imagenet(config):
        return None
    name, url, md5 = imagenet_file(config.model, config.alpha, config.image_size)
    if base_url:
        url = base_url.rstrip("/") + "/" + name
    path = keras_models_dir() / name
    if path.is_file() and (md5 is None or _md5(path) == md5):
        return path
    try:
        _download(url, path, md5, timeout)
    except (OSError, ValueError, http.client.HTTPException) as error:  # URLError, HTTPError and timeouts are OSErrors
        reason = getattr(error, "reason", None) or error
        raise ConfigError(
            f"ImageNet weights for {config.model} are not in {_shown(path.parent)} and the download of {url} failed ({reason}); "
            f"copy {name} there from a machine that has it (or pass -P weights=/path/to/{name}), or train without them: -P weights=none"
        ) from None
    return path


def _download(url: str, path: Path, md5: str | None, timeout: float) -> None:
    print(f"downloading ImageNet weights {url} to {_shown(path.parent)} (once)", file=sys.stderr, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")  # never leave a truncated file where Keras would take it as complete
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as file:
            while chunk := response.read(1 << 20):
                file.write(chunk)
        if md5 is not None and _md5(partial) != md5:
            raise ValueError(f"the file's MD5 is {_md5(partial)}, not {md5}")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _shown(folder: Path) -> str:
    """~/.keras/models rather than /home/someone/.keras/models: what a user types."""
    try:
        return "~/" + str(folder.relative_to(Path.home()))
    except ValueError:
        return str(folder)
