"""Checks that run before TensorFlow loads: parameters, tracking store, ImageNet weights, init_model, data.

A mistake in any of them is reported in seconds, as one line, and no MLflow run is
started, so nothing is left RUNNING and nothing already recorded is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from train.config import ConfigError, TrainConfig
from train.data.cache import ImageSource, open_report_images
from train.data.demo import demo_folder
from train.data.scan import DataReport, scan
from train.model import weights
from train.run import resume
from train.tracking import runs as tracking
from train.tracking import store as tracking_store
from train.tracking.heartbeat import Heartbeat


@dataclass
class Preflight:
    report: DataReport
    init_run_id: str | None
    resume_run_id: str | None = None
    images: ImageSource | None = None  # decoded once per machine and folder (train/data/cache.py)


def preflight(config: TrainConfig) -> Preflight:
    config.validate()
    tracking_store.connect(config.experiment)
    weights.ensure_imagenet_weights(config)  # offline, a missing file is one line here, not a Keras traceback later
    init_run_id = tracking.resolve_model_run(config.init_model) if config.stage == "finetune" else None
    if init_run_id:
        _image_size_from_init_model(config)
    if config.resume:
        resume.check_resumable(config.resume, config)
    folder = demo_folder() if config.data == "demo" else Path(config.data).expanduser()
    launcher = os.environ.get("MLFLOW_RUN_ID")  # under `mlflow run` the run is RUNNING already: it beats while the data is prepared
    with Heartbeat(launcher) if launcher else contextlib.nullcontext():
        report = scan(folder, config.val_split, config.seed, config.image_size)
        print(report.summary(), flush=True)
        images = open_report_images(report, config.image_size, config.cache)  # files deleted since the scan leave the report
    print(_cache_line(images), flush=True)
    return Preflight(report, init_run_id, config.resume or None, images)


def _image_size_from_init_model(config: TrainConfig) -> None:
    """Fine-tuning takes the init_model's input size unless image_size was given (is not the default):
    repeating it by hand was an error after TensorFlow had loaded. Under `mlflow run` MLflow has
    logged image_size already, so there it must be given, and a mismatch is one line here."""
    import mlflow

    from train.tools.evaluate_checks import model_input_size

    size = model_input_size(mlflow.models.get_model_info(config.init_model))
    if size is None or size == config.image_size:
        return
    default = next(spec.default for spec in dataclasses.fields(TrainConfig) if spec.name == "image_size")
    if config.image_size != default or os.environ.get("MLFLOW_RUN_ID"):
        raise ConfigError(f"init_model '{config.init_model}' takes {size}x{size} images (got image_size={config.image_size}); "
                          f"set image_size={size}" + ("" if os.environ.get("MLFLOW_RUN_ID") else " or leave it out"))
    config.image_size = size
    print(f"image_size: {size}, as init_model '{config.init_model}' takes", flush=True)


def _cache_line(images: ImageSource) -> str:
    if images.mode == "none":
        return "images: decoded every epoch (cache=none)"
    how = f"prepared now ({images.decoded} decoded in {images.seconds:.1f} s)" if images.decoded else f"reused (opened in {images.seconds:.1f} s)"
    return f"images: {images.mode}, cache entry {images.key} {how}"
