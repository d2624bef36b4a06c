"""`train(config)`: the whole training run, top to bottom.

Everything that can fail on bad input (parameters, tracking store, init_model, data)
is checked before TensorFlow builds a model or MLflow starts a run, so a mistake costs
seconds and leaves no run behind.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd

from train import contract
from train.config import ConfigError, TrainConfig
from train.data.pipeline import make_datasets
from train.data.scan import DataReport
from train.errors import TrainingError
from train.model import fused_adam
from train.model.build import auto_bn_momentum, build_model, unfreeze_for_finetune
from train.model.device import set_up_devices
from train.model.pool import ModelPool, graph_key
from train.model.seeding import seed_run
from train.run import chance, interrupt, resume
from train.run.batch_schedule import BatchSchedule
from train.run.callbacks import EpochMetricsLogger, StopOnNonFiniteLoss
from train.run.confusion import log_confusion_matrix
from train.run.preflight import Preflight, preflight
from train.tracking import mlflow_private
from train.tracking import runs as tracking
from train.tracking import store as tracking_store
from train.tracking.heartbeat import Heartbeat
from train.tracking.metric_buffer import MetricBuffer

SERVER_PATIENCE_SECONDS = 120  # how long the end of a run waits for a tracking server that went away


@dataclass
class TrainResult:
    run_id: str
    best_val_accuracy: float
    best_epoch: int
    history: list[dict[str, float]] = field(repr=False)
    model_uri: str = ""
    registered_version: int | None = None


def train(config: TrainConfig, checked: Preflight | None = None, callbacks=(), run_options: dict | None = None, models: ModelPool | None = None) -> TrainResult:
    """Train, log everything to MLflow and return the run's summary.

    `callbacks` are extra Keras callbacks (a sweep's pruning hook); `run_options` go to
    `mlflow.start_run` (a sweep passes parent_run_id and tags); `models` keeps the compiled
    model for the next run with the same graph (a sweep's children).
    """
    checked = checked or preflight(config)
    report = checked.report

    devices = set_up_devices(config)
    seed_run(config.seed)
    if config.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    global_batch = config.batch_size
    train_data, val_data = make_datasets(report, checked.images, global_batch, config.seed, config.augment)
    steps_per_epoch = math.ceil(len(report.train) / global_batch)
    bn_momentum = bn_momentum_for(config, len(report.train))
    with devices.strategy.scope():
        model = model_for(config, report, bn_momentum)
        compile_for(model, config, accuracy=True)
        key = graph_key(config, classes=len(report.class_names), bn_momentum=bn_momentum, device=devices.description,
                        train_input=train_data.element_spec, val_input=val_data.element_spec)
        models = models or ModelPool()  # a run of its own: a pool that lives as long as the run
        model = models.take(key, model, devices.strategy)
    print(f"device: {devices.description}; model: {model.name}, {model.count_params():,} parameters", flush=True)

    run_options = {**(run_options or {}), **({"run_id": checked.resume_run_id} if checked.resume_run_id else {})}
    if checked.resume_run_id:
        resume.retire_launcher_run(checked.resume_run_id)
    # From the run's first moment to its last, a stop signal ends it KILLED (interrupt.GracefulStop),
    # and a heartbeat tells train.tracking.stale that it lives.
    with mlflow.start_run(**run_options) as run, interrupt.GracefulStop() as stopper, Heartbeat(run.info.run_id):
        run_id = run.info.run_id
        metrics = MetricBuffer(run_id)
        stopper.on_stop = lambda stopped: _end_interrupted(run_id, stopped, metrics)
        logged_epochs = resume.logged_epochs(run_id)
        _start_run_records(config, checked, devices, bn_momentum, resumed=bool(logged_epochs))
        if logged_epochs:
            resume.forget_stop_reason(run_id)  # it runs again: the old reason would outlive it
        checkpoint = interrupt.EpochCheckpoint(run_id)
        logger = EpochMetricsLogger(len(report.train), metrics.log, logged_epochs, checkpoint)
        if logged_epochs:
            resume.fetch_checkpoint(run_id, interrupt.checkpoint_dir(run_id))
            for row in interrupt.saved_epochs(run_id):  # saved but not sent when the process died
                logger.publish(row)
            done = interrupt.completed_epochs(run_id)
            print(f"resuming run {run_id} after epoch {done}/{config.epochs} (MLflow step {done - 1})", flush=True)
        warning = chance.random_base_warning(config)
        if warning:
            print(warning, flush=True)
        nan_guard = StopOnNonFiniteLoss()
        fit_callbacks = [BatchSchedule(config, steps_per_epoch), stopper, nan_guard, logger, checkpoint, *callbacks]
        model.fit(train_data, validation_data=val_data, epochs=config.epochs, callbacks=fit_callbacks, shuffle=False, verbose=fit_verbosity())
        models.keep(key, model, devices.strategy)  # fit() returned: the next run with this graph may train it
        _send_queued_metrics(metrics, stopper.check)
        if nan_guard.where is not None:
            interrupt.remove_checkpoint(run_id)  # its weights are NaN: nothing to resume from
            _fail_on_nan(nan_guard, config)

        history = resume.epoch_history(run_id)
        result = _summarise(run_id, history)
        chance.note_if_at_chance(result.best_val_accuracy, len(report.class_names))
        stopper.check()  # between the steps that follow fit(), a stop signal ends the run KILLED
        example = _log_outputs(model, models, val_data, report, history)
        stopper.check()
        result.model_uri, result.registered_version = _log_model(model, example, config)
        interrupt.remove_checkpoint(run_id)
        # Epochs as Keras prints them (from 1); MLflow's step (best_epoch) counts from 0.
        print(f"run {run_id}: best val_accuracy {result.best_val_accuracy:.4f} at epoch {result.best_epoch + 1}/{config.epochs} "
              f"(MLflow step {result.best_epoch}); "
              f"see it with `mlflow ui --backend-store-uri {contract.tracking_uri()}` or the dashboard", flush=True)
    return result


def _start_run_records(config: TrainConfig, checked: Preflight, devices, bn_momentum, resumed: bool) -> None:
    """Name, tags, params and the data report: what a run says about itself before epoch 0."""
    report = checked.report
    tracking.name_run(config)
    tags = {contract.TAG_KIND: contract.KIND_TRAIN, contract.TAG_HOST: socket.gethostname(), contract.TAG_PID: str(os.getpid())}
    if checked.init_run_id:
        tags[contract.TAG_INIT_RUN_ID] = checked.init_run_id
    mlflow.set_tags(tags)
    extras = {
        "num_classes": len(report.class_names),
        "train_images": len(report.train),
        "val_images": len(report.val),
        "skipped_files": len(report.skipped),
        "bn_momentum_used": bn_momentum if bn_momentum is not None else "not trained",
        "device": devices.description,
    }
    tracking.log_params_once({**config.as_params(), **{key: str(value) for key, value in extras.items()}})
    _log_data_costs(checked)
    if not resumed:
        _log_data(report)


def _log_data_costs(checked: Preflight) -> None:
    images, report = checked.images, checked.report
    mlflow.set_tag(contract.TAG_DATA_CACHE, f"{images.mode} {images.key}".strip())
    mlflow.log_metrics({
        contract.DATA_SCAN_SECONDS: report.seconds,
        contract.DATA_FILES_OPENED: report.inspected,
        contract.DATA_PREPARE_SECONDS: images.seconds,
        contract.DATA_IMAGES_DECODED: images.decoded,
        contract.DATA_CACHE_REUSED: int(images.reused),
    }, step=0)


def _end_interrupted(run_id: str, stopper: interrupt.GracefulStop, metrics: MetricBuffer) -> None:
    """Keep what the run has (metrics, checkpoint), say why it stopped, and mark it KILLED.

    A second signal skips the waiting and the checkpoint upload (it stays on this machine). A store
    that is down cannot be told: what it lacks and the run's end go to a file for
    `python -m train.tracking.upload`, said in one line, instead of a run left RUNNING."""
    try:
        sent = stopper.hurry or metrics.drain(patience_seconds=10, check=lambda: stopper.hurry and _raise_hurried())
        folder = interrupt.checkpoint_dir(run_id)
        if sent and folder.exists() and not stopper.hurry:
            mlflow.log_artifacts(str(folder), resume.CHECKPOINT_ARTIFACT)
        with tracking_store.http_limits(tracking_store.PROBE_HTTP_LIMITS):
            mlflow.set_tag(contract.TAG_STOP_REASON, stopper.reason)
            mlflow.end_run("KILLED")
    except (_Hurried, Exception) as error:  # noqa: BLE001 - the store is down (or the user insisted): record it locally
        if not isinstance(error, _Hurried) and not tracking_store.is_transient(error):
            raise
        path = metrics.save(Path.cwd(), end={"status": "KILLED", "stop_reason": stopper.reason})
        mlflow_private.forget_active_run()
        print(f"run {run_id}: the tracking store did not take its end; its last metrics and KILLED are in {path}: "
              f"send them with `python -m train.tracking.upload {path}`", file=sys.stderr, flush=True)
    print(f"run {run_id} stopped by {signal.Signals(stopper.signum).name}; continue it with --resume {run_id} "
          f"(or mlflow run --run-id {run_id} ...)", file=sys.stderr, flush=True)


class _Hurried(Exception):
    """A second signal while the run was being stopped: stop waiting for the store."""


def _raise_hurried():
    raise _Hurried


def _send_queued_metrics(metrics: MetricBuffer, check) -> None:
    if metrics.drain(patience_seconds=SERVER_PATIENCE_SECONDS, check=check):
        return
    path = metrics.save(Path.cwd())
    raise TrainingError(f"tracking store {contract.tracking_uri()} did not come back within {SERVER_PATIENCE_SECONDS} s; "
                        f"the per-epoch history is in {path}: send it with `python -m train.tracking.upload {path}`")


def bn_momentum_for(config: TrainConfig, train_images: int) -> float | None:
    """The BatchNormalization momentum of a scratch model (None: the layers keep their own).
    lr_find builds its model with this too, so its curve describes the model training builds."""
    if config.stage != "scratch":
        return None
    return config.bn_momentum_value or auto_bn_momentum(math.ceil(train_images / config.batch_size))


def model_for(config: TrainConfig, report: DataReport, bn_momentum: float | None) -> keras.Model:
    if config.stage != "finetune":
        return build_model(len(report.class_names), config, bn_momentum)
    model = mlflow.keras.load_model(config.init_model)
    expected_size, classes = model.input_shape[1], model.output_shape[-1]
    if expected_size != config.image_size:
        raise ConfigError(f"init_model '{config.init_model}' takes {expected_size}x{expected_size} images; set image_size={expected_size}")
    if classes != len(report.class_names):
        raise ConfigError(f"init_model '{config.init_model}' predicts {classes} classes but data has {len(report.class_names)}; fine-tune on the data set it was trained on")
    unfreeze_for_finetune(model)
    return model


def fit_verbosity() -> int | str:
    """Keras' progress bar on a terminal; one plain line per epoch (with the validation metrics) in a
    log file or a pipe (`mlflow run > log`, a sweep under a scheduler), where the bar wrote its
    first step of each epoch, in ANSI colour codes, and never the epoch's result."""
    return "auto" if sys.stdout.isatty() else 2


def compile_for(model: keras.Model, config: TrainConfig, *, accuracy: bool = False) -> None:
    """Compile `model` with the run's optimizer and loss (and, with `accuracy`, the contract's
    accuracy metric), every variable the training step uses created now, before fit.

    Left to Keras, the optimizer builds inside fit()'s first trace, where each of its variables
    (316 for MobileNetV2) is lifted out of the graph one by one: 7 s of a 20 s first epoch at
    64 px on 2 cores, against 0.4 s eagerly (`python bench/bench_trace.py`). Keras's own
    BackupAndRestore builds it eagerly the same way before restoring a checkpoint. A metric named
    by a string is likewise made inside the first trace, and a tf.function that creates a variable
    is traced a second time (TensorFlow lifts the variable out, then traces again without it):
    the whole training step, 8 s of a 1-epoch run at 64 px on 2 cores. A metric object is made here.
    """
    metrics = [keras.metrics.SparseCategoricalAccuracy(name=contract.ACCURACY)] if accuracy else None
    model.compile(optimizer=optimizer_for(config), loss="sparse_categorical_crossentropy", metrics=metrics, jit_compile=config.xla)
    model.optimizer.build(model.trainable_variables)


def optimizer_for(config: TrainConfig) -> keras.optimizers.Optimizer:
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=config.lr, momentum=0.9)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=config.lr)
    return fused_adam.fuse(keras.optimizers.Adam(learning_rate=config.lr))  # the same Adam, traced in half the time


def _log_data(report: DataReport) -> None:
    mlflow.log_text(report.to_json(), contract.DATA_REPORT_FILE)
    files = pd.DataFrame(
        [(path, report.class_names[label], "train") for path, label in report.train]
        + [(path, report.class_names[label], "val") for path, label in report.val],
        columns=["path", "label", "split"],
    )
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways": it is a local folder
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(files, source=report.source, name=Path(report.source).name)
    try:
        mlflow.log_input(dataset, context="training")
    except mlflow.exceptions.MlflowException:  # runs started together insert the same dataset at once: the loser finds it there
        mlflow.log_input(dataset, context="training")


def _fail_on_nan(guard: StopOnNonFiniteLoss, config: TrainConfig) -> None:
    mlflow.set_tag(contract.TAG_STOP_REASON, f"non-finite {guard.what} at {guard.place.replace(',', '')}")
    mlflow.log_text(resume.epoch_history(mlflow.active_run().info.run_id).to_csv(index=False), contract.HISTORY_FILE)
    raise TrainingError(f"{guard.what} became NaN or infinite at {guard.place} with lr={config.lr:g}; try a learning rate 10x lower")


def _summarise(run_id: str, history: pd.DataFrame) -> TrainResult:
    val = history[contract.VAL_ACCURACY].to_numpy(dtype=float)
    best_epoch = int(history["epoch"].iloc[np.nanargmax(val)]) if not np.isnan(val).all() else int(history["epoch"].iloc[-1])
    at_best = history.loc[history["epoch"] == best_epoch]
    best = float(at_best[contract.VAL_ACCURACY].iloc[0])
    # With these the dashboard summarises a finished run from the run search alone (no history read).
    summary = {
        contract.BEST_VAL_ACCURACY: best, contract.BEST_EPOCH: best_epoch, contract.EPOCHS_TRAINED: int(history["epoch"].max()) + 1,
        contract.ACCURACY_AT_BEST: float(at_best[contract.ACCURACY].iloc[0]),
        contract.MEDIAN_IMAGES_PER_SECOND: float(np.nanmedian(history[contract.IMAGES_PER_SECOND].to_numpy(dtype=float))) if history[contract.IMAGES_PER_SECOND].notna().any() else math.nan,
    }  # fmt: skip
    mlflow.log_metrics({key: value for key, value in summary.items() if key in (contract.BEST_VAL_ACCURACY, contract.BEST_EPOCH) or math.isfinite(value)})
    return TrainResult(run_id, best, best_epoch, history.to_dict("records"))


def _log_outputs(model: keras.Model, models: ModelPool, val_data, report: DataReport, history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """History, class names and the confusion matrix; returns (images, probabilities) of two
    validation images, the model signature's examples."""
    mlflow.log_text(history.to_csv(index=False), contract.HISTORY_FILE)
    mlflow.log_text(json.dumps(report.class_names), contract.CLASS_NAMES_FILE)
    images, labels, probabilities = _validation_predictions(models.inference_step(model, val_data.element_spec[0]), val_data)
    log_confusion_matrix(labels, probabilities.argmax(axis=1), report.class_names, contract.CONFUSION_MATRIX_FILE, contract.CONFUSION_MATRIX_DATA_FILE)
    return images, probabilities[: len(images)]


def _validation_predictions(forward, val_data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first two images, every label, every probability row) from ONE pass over the validation set.

    `model.predict` drops the labels, and reading them separately means a second pass
    (decoding every image again with cache=none). `forward` is the model's traced
    inference step (ModelPool.inference_step).
    """
    first, labels, probabilities = None, [], []
    for batch, batch_labels in val_data:
        first = batch[:2].numpy().astype(np.float32) if first is None else first
        probabilities.append(forward(batch).numpy())
        labels.append(batch_labels.numpy())
    return first, np.concatenate(labels), np.concatenate(probabilities)


def _log_model(model: keras.Model, example: tuple[np.ndarray, np.ndarray], config: TrainConfig) -> tuple[str, int | None]:
    import tensorflow as tf

    images, probabilities = example
    signature = mlflow.models.infer_signature(images, probabilities)
    requirements = [f"mlflow=={mlflow.__version__}", f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}"]
    info = tracking.log_keras_model(model, signature, images[:1], requirements)
    version = tracking.register(info.model_uri, config.register_as, config.stage) if config.register_as else None
    return info.model_uri, version
