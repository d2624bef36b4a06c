"""`python -m train.tools.evaluate`: how well a logged model classifies an image folder.

Any model URI (runs:/ID/model, models:/NAME@ALIAS, models:/NAME/N) on a folder of class
sub-folders: accuracy, per-class precision and recall, a confusion matrix and one row per
image, logged to a new run tagged kind=evaluate that names the model's training run
(`evaluated_run_id`). Under `mlflow run -e evaluate` the run `mlflow run` started is used.

Which images: a folder with `train/` next to `test/` or `val/` is evaluated on `test/`
(else `val/`), the images training never saw; any other folder on every readable image
of its class sub-folders. The folder's classes are matched to the model's by name (the
run's class_names.json), so a folder may hold only some of the model's classes, in any
order, but no class the model does not know.

Like `python -m train` (train/run/preflight.py), every check that can fail on bad input (model URI,
tracking store, folder, class names, image size) runs before TensorFlow loads, and fails with
one line: train/tools/evaluate_checks.py. This module predicts and logs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import click

from train import contract, csv_safe
from train.config import ConfigError
from train.tools.evaluate_checks import Checked, check, listing


@dataclass
class Evaluation:
    run_id: str
    accuracy: float
    per_class: list[dict]
    confusion: list[list[int]]


def predict(checked: Checked, batch_size: int):
    """(labels, probabilities) for every image, through the same decoder training uses."""
    import mlflow
    import numpy as np
    import tensorflow as tf

    from train.data.pipeline import decode_image

    model = mlflow.keras.load_model(checked.model_uri)
    paths = [path for path, _ in checked.items]
    labels = np.array([label for _, label in checked.items], dtype=int)
    images = tf.data.Dataset.from_tensor_slices(paths).map(lambda path: decode_image(path, checked.image_size), num_parallel_calls=tf.data.AUTOTUNE)
    probabilities = model.predict(images.batch(batch_size).prefetch(tf.data.AUTOTUNE), verbose=0)
    if probabilities.shape != (len(paths), len(checked.class_names)):
        raise ConfigError(f"model '{checked.model_uri}' gave predictions of shape {probabilities.shape}; expected {len(checked.class_names)} class probabilities per image")
    return labels, np.asarray(probabilities, dtype=np.float64)


def per_class_table(labels, predicted, class_names: list[str]) -> tuple[float, list[dict], list[list[int]]]:
    """Accuracy, one row per model class (precision/recall None when undefined), the confusion matrix."""
    import numpy as np

    from train.run.confusion import confusion_matrix

    matrix = confusion_matrix(labels, predicted, len(class_names))
    accuracy = float(np.trace(matrix) / matrix.sum())
    rows = []
    for i, (name, suffix) in enumerate(zip(class_names, contract.class_metric_suffixes(class_names), strict=True)):
        images, predictions, correct = int(matrix[i].sum()), int(matrix[:, i].sum()), int(matrix[i, i])
        rows.append({
            "class": name,
            "metric_suffix": suffix,
            "images": images,
            "predicted": predictions,
            "correct": correct,
            "precision": correct / predictions if predictions else None,  # never predicted: undefined
            "recall": correct / images if images else None,  # no images of the class: undefined
        })
    return accuracy, rows, matrix.tolist()


def metrics_of(accuracy: float, rows: list[dict]) -> dict[str, float]:
    """The run's metrics: accuracy, precision_<class>, recall_<class> (undefined ones left out)."""
    metrics = {contract.EVAL_ACCURACY: accuracy}
    for row in rows:
        if row["precision"] is not None:
            metrics[contract.EVAL_PRECISION_PREFIX + row["metric_suffix"]] = row["precision"]
        if row["recall"] is not None:
            metrics[contract.EVAL_RECALL_PREFIX + row["metric_suffix"]] = row["recall"]
    return metrics


def evaluate(checked: Checked, batch_size: int, image_size_option: str = "auto", run_id: str | None = None) -> Evaluation:
    """Predict every image, log the run, print the table; return what was logged.

    `run_id`: a run made for this evaluation (evaluate_on_test), logged into whatever run is active
    in the caller (a sweep's parent) or MLFLOW_RUN_ID names; else a new run, or `mlflow run`'s."""
    import mlflow
    import pandas as pd

    from train.run.confusion import confusion_matrix_figure, plain_text
    from train.tracking import runs as tracking

    labels, probabilities = predict(checked, batch_size)
    predicted = probabilities.argmax(axis=1)
    accuracy, rows, matrix = per_class_table(labels, predicted, checked.class_names)

    folder = checked.folder.resolve()
    data_name = "demo" if checked.data == "demo" else (folder.name if checked.split == "all" else f"{folder.parent.name}/{folder.name}")
    name = f"evaluate {checked.model_uri} on {data_name}"
    under_mlflow_run = "MLFLOW_RUN_ID" in os.environ and run_id is None  # `mlflow run` started the run: log into it
    if run_id is not None:
        opening = {"run_id": run_id, "nested": mlflow.active_run() is not None}  # given: not a child of the active run
    else:
        opening = {} if under_mlflow_run else {"run_name": name}
    with mlflow.start_run(**opening) as run:
        if under_mlflow_run and tracking._GENERATED_RUN_NAME.match(run.info.run_name or ""):
            mlflow.set_tag("mlflow.runName", name)
        mlflow.set_tags({contract.TAG_KIND: contract.KIND_EVALUATE, contract.TAG_EVALUATED_RUN_ID: checked.model_run_id,
                         contract.TAG_EVALUATED_SPLIT: checked.split})
        tracking.log_params_once({
            contract.PARAM_MODEL_URI: checked.model_uri,
            contract.PARAM_DATA: checked.data,
            "image_size": image_size_option,
            "batch_size": str(batch_size),
            "split": checked.split,
            "evaluated_images": str(len(checked.items)),
            "skipped_files": str(len(checked.skipped)),
        })
        files = pd.DataFrame({
            "path": [path for path, _ in checked.items],
            "label": [checked.class_names[label] for label in labels],
            "predicted": [checked.class_names[p] for p in predicted],
            "probability": probabilities[range(len(predicted)), predicted],
        })
        dataset = _log_dataset(files[["path", "label"]], checked)
        metrics = metrics_of(accuracy, rows)
        _log_metrics(metrics, checked.model_id, dataset)
        mlflow.log_text(csv_safe.to_csv(files), contract.EVAL_PREDICTIONS_FILE)  # file and class names are user text
        figure = confusion_matrix_figure(labels, predicted, checked.class_names)
        figure.axes[0].set_title(plain_text(f"{data_name}: {len(labels)} images, accuracy {accuracy:.3f}"))
        mlflow.log_figure(figure, contract.EVAL_CONFUSION_MATRIX_FILE)
        summary = {
            "model_uri": checked.model_uri,
            "model_run_id": checked.model_run_id,
            "model_version": checked.model_version,
            "data": checked.data,
            "folder": str(checked.folder),
            "split": checked.split,
            "image_size": checked.image_size,
            "images": len(labels),
            "includes_training_images": checked.includes_training_images,
            "accuracy": accuracy,
            "class_names": checked.class_names,
            "per_class": rows,
            "confusion_matrix": {"rows": "true class", "columns": "predicted class", "counts": matrix},
            "skipped": [{"path": s.path, "reason": s.reason} for s in checked.skipped],
            "converted": checked.converted,
        }
        mlflow.log_text(json.dumps(summary, indent=2), contract.EVALUATION_FILE)
        print(_table(checked, accuracy, rows, run.info.run_id), flush=True)
        return Evaluation(run.info.run_id, accuracy, rows, matrix)


@dataclass
class TestAccuracy:
    """A training run's accuracy on its data's held-out test/ split, with its 95% Wilson interval."""

    training_run_id: str
    accuracy: float
    low: float
    high: float
    evaluation_run_id: str | None  # the kind=evaluate run; None when the run had been evaluated before


def evaluate_on_test(training_run_id: str, data_folder: str, batch_size: int = 32) -> TestAccuracy | None:
    """Evaluate a training run's logged model ONCE on the held-out test/ split of `data_folder`.

    The evaluation is a kind=evaluate run (evaluated_run_id = the training run, evaluated_split =
    test) in the training run's experiment; the training run gets test_accuracy and its 95% Wilson
    interval (test_accuracy_low, _high). A run that has test_accuracy already is not evaluated
    again: its logged numbers are returned. None when the folder has no held-out test/ (a val/ or
    validation/ validates, test/ is beside them). Raises ConfigError (one line) on bad input."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from train.data.demo import demo_folder
    from train.data.scan import held_out_test_folder

    client = MlflowClient()
    run = client.get_run(training_run_id)
    logged = run.data.metrics
    if contract.TEST_ACCURACY in logged:
        return TestAccuracy(training_run_id, *(logged.get(name, math.nan) for name in contract.TEST_METRICS), None)
    root = demo_folder() if data_folder == "demo" else Path(data_folder).expanduser()
    if held_out_test_folder(root) is None:
        return None
    experiment = client.get_experiment(run.info.experiment_id).name
    checked = check(f"runs:/{training_run_id}/{contract.MODEL_ARTIFACT}", str(root), experiment=experiment)
    name = f"evaluate {run.info.run_name or training_run_id} on test"
    evaluation_run = client.create_run(run.info.experiment_id, run_name=name)
    evaluation = evaluate(checked, batch_size, run_id=evaluation_run.info.run_id)
    correct, images = int(sum(evaluation.confusion[i][i] for i in range(len(evaluation.confusion)))), len(checked.items)
    low, high = wilson_interval(correct, images)
    client.log_batch(training_run_id, metrics=[Metric(key, value, int(time.time() * 1000), 0) for key, value in
                                               zip(contract.TEST_METRICS, (correct / images, low, high), strict=True)])
    print(f"run {training_run_id}: test accuracy {correct / images:.4f} [{low:.4f}, {high:.4f}] on {images} held-out images", flush=True)
    return TestAccuracy(training_run_id, correct / images, low, high, evaluation.run_id)


def wilson_interval(correct: int, images: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: right near 0 and 1 and for few images, where
    the normal approximation leaves [0, 1]."""
    from scipy import stats

    interval = stats.binomtest(correct, images).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def _log_dataset(files, checked: Checked):
    import mlflow

    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways": it is a local folder
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(files, source=str(checked.folder), name=checked.folder.name)
    mlflow.log_input(dataset, context="evaluation")
    return dataset


def _log_metrics(metrics: dict[str, float], model_id: str | None, dataset) -> None:
    """Log to the run, and link them to the logged model and data set (MLflow 3's model page) when the store can."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if model_id:
        try:
            mlflow.log_metrics(metrics, model_id=model_id, dataset=dataset)
            return
        except MlflowException:
            pass  # a model from a store that does not know it: the run's metrics are what matters
    mlflow.log_metrics(metrics)


def _table(checked: Checked, accuracy: float, rows: list[dict], run_id: str) -> str:
    width = max(5, *(len(row["class"]) for row in rows))
    where = str(checked.folder)
    version = f" (version {checked.model_version})" if checked.model_version else ""
    lines = [f"{checked.model_uri}{version} on {where}: {len(checked.items)} images, accuracy {accuracy:.4f}"]
    lines.append(f"  {'class':<{width}}  {'images':>6}  {'precision':>9}  {'recall':>6}")
    for row in rows:
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        lines.append(f"  {row['class']:<{width}}  {row['images']:>6}  {precision:>9}  {recall:>6}")
    if checked.skipped:
        lines.append(f"  skipped: {len(checked.skipped)} unreadable files (listed in {contract.EVALUATION_FILE})")
    if checked.missing_classes:
        lines.append(f"  note: no images of {listing(checked.missing_classes)}; their recall is not measured")
    if checked.includes_training_images:
        lines.append("  note: the model was trained on images of this folder, so this accuracy is optimistic; "
                     "evaluate on images it never saw (a val/ or test/ folder)")
    lines.append(f"run {run_id} (kind={contract.KIND_EVALUATE}, {contract.TAG_EVALUATED_RUN_ID}={checked.model_run_id})")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--model-uri", required=True, help="The model to evaluate: runs:/RUN_ID/model, models:/NAME@ALIAS or models:/NAME/VERSION.")
@click.option("--data", default="demo", show_default=True,
              help="Image folder with one sub-folder per class (every readable image is used), or with train/ and "
                   "test/ or val/ (test/, else val/, is used), or 'demo'.")
@click.option("--image-size", default="auto", show_default=True, help="auto: the model's input size. A number must equal it.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per prediction batch.")
@click.option("--experiment", default="", help=f"MLflow experiment (under mlflow run use --experiment-name). Default: MLFLOW_EXPERIMENT_NAME or '{contract.DEFAULT_EXPERIMENT}'.")
def command(model_uri: str, data: str, image_size: str, batch_size: int, experiment: str) -> None:
    """Evaluate a logged model on an image folder; log accuracy, per-class precision/recall and a confusion matrix."""
    checked = check(model_uri, data, image_size, batch_size, experiment)
    evaluate(checked, batch_size, image_size)


def main(argv: list[str] | None = None) -> int:
    """Run the command; print any user error as one line (exit 2), as `python -m train` does."""
    from train.cli import main as train_main

    return train_main(argv, command=command, prog_name="python -m train.tools.evaluate")


if __name__ == "__main__":
    sys.exit(main())
