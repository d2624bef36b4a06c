"""`python -m train.evaluate`: how well a logged model classifies an image folder.

Any model URI (runs:/ID/model, models:/NAME@ALIAS, models:/NAME/N) on a folder of class
sub-folders: accuracy, per-class precision and recall, a confusion matrix and one row per
image, logged to a new run tagged kind=evaluate that names the model's training run
(`evaluated_run_id`). Under `mlflow run -e evaluate` the run `mlflow run` started is used.

Which images: a folder with `train/` next to `test/` or `val/` is evaluated on `test/`
(else `val/`), the images training never saw; any other folder on every readable image
of its class sub-folders. The folder's classes are matched to the model's by name (the
run's class_names.json), so a folder may hold only some of the model's classes, in any
order, but no class the model does not know.

Like `python -m train`, every check that can fail on bad input (model URI, tracking store,
folder, class names, image size) runs before TensorFlow loads, and fails with one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import click

from train import contract
from train.config import ConfigError

SPLITS = ("test", "val")  # held-out sub-folders of a train/ layout, in order of preference


@dataclass
class Checked:
    """Everything known before TensorFlow loads: the model, its classes, the images."""

    model_uri: str
    model_run_id: str
    model_id: str | None
    model_version: str | None
    class_names: list[str]  # the model's, in its output order
    image_size: int
    data: str  # as given
    folder: Path  # the folder evaluated (FOLDER, FOLDER/test or FOLDER/val)
    split: str  # "all", "test" or "val"
    items: list[tuple[str, int]]  # (path to decode, index into class_names)
    skipped: list = field(default_factory=list)
    converted: list[str] = field(default_factory=list)
    missing_classes: list[str] = field(default_factory=list)
    includes_training_images: bool = False


@dataclass
class Evaluation:
    run_id: str
    accuracy: float
    per_class: list[dict]
    confusion: list[list[int]]


def evaluation_folder(folder: Path) -> tuple[Path, str]:
    """The folder whose class sub-folders are evaluated, and which split that is."""
    if (folder / "train").is_dir():
        for split in SPLITS:
            if (folder / split).is_dir():
                return folder / split, split
    return folder, "all"


def check(model_uri: str, data: str, image_size: str = "auto", batch_size: int = 32, experiment: str = "") -> Checked:
    """Validate the input and scan the folder; raise ConfigError with one line. No TensorFlow."""
    from train import tracking
    from train.demo_data import demo_folder

    if batch_size < 1:
        raise ConfigError(f"batch-size must be at least 1 (got {batch_size})")
    requested_size = _image_size_option(image_size)
    if not model_uri:
        raise ConfigError("--model-uri is required: runs:/RUN_ID/model, models:/NAME@ALIAS or models:/NAME/VERSION")
    root = demo_folder() if data == "demo" else Path(data).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data folder '{data}' does not exist; give a folder with one sub-folder per class, or 'demo'")

    folder, split = evaluation_folder(root)

    tracking.connect(experiment)
    with _no_progress_bars():  # small files: a bar each would bury the one-line errors
        info = _model_info(model_uri, tracking)
        class_names = _model_class_names(model_uri, info.run_id)
        trained_here = _trained_on(info.run_id, folder)
    size = _image_size(model_uri, info, requested_size, len(class_names))

    folder_classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folder_classes:
        raise ConfigError(f"data folder '{folder}' has no class sub-folders; put each class's images in a sub-folder named after it ({_listing(class_names)})")
    unknown = [name for name in folder_classes if name not in class_names]
    if unknown:
        raise ConfigError(f"class folder{'s' if len(unknown) > 1 else ''} {_listing(unknown)} in '{folder}' "
                          f"{'are not classes' if len(unknown) > 1 else 'is not a class'} of model '{model_uri}' "
                          f"(its classes: {_listing(class_names)}); rename or remove {'them' if len(unknown) > 1 else 'it'}")

    from train.scan import DataReport, _scan_classes

    report = DataReport(str(folder), split, folder_classes)
    found = _scan_classes(folder, folder_classes, report, size)  # opens every file once: skips, converts
    if not found:
        raise ConfigError(f"data folder '{folder}' holds no readable images ({len(report.skipped)} files skipped)")
    index = {name: i for i, name in enumerate(class_names)}
    items = [(path, index[folder_classes[label]]) for path, label in found]
    present = {label for _, label in items}
    return Checked(
        model_uri=model_uri,
        model_run_id=info.run_id,
        model_id=getattr(info, "model_id", None),
        model_version=_registered_version(model_uri),
        class_names=class_names,
        image_size=size,
        data=data,
        folder=folder,
        split=split,
        items=items,
        skipped=report.skipped,
        converted=report.converted,
        missing_classes=[name for i, name in enumerate(class_names) if i not in present],
        includes_training_images=trained_here,
    )


@contextlib.contextmanager
def _no_progress_bars():
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _image_size_option(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 32:
        raise ConfigError(f"image-size must be 'auto' (the model's input size) or a whole number of pixels, at least 32 (got '{value}')")
    return size


def _model_info(model_uri: str, tracking):
    try:
        run_id = tracking.resolve_model_run(model_uri)
    except ConfigError as error:  # its message names init_model, the training parameter
        raise ConfigError(str(error).replace(f"init_model '{model_uri}'", f"model '{model_uri}'", 1)) from None
    import mlflow

    info = mlflow.models.get_model_info(model_uri)  # resolves, as it just did for resolve_model_run
    if info.run_id != run_id:
        raise ConfigError(f"model '{model_uri}' changed while it was being resolved (an alias moved?); try again")
    if "keras" not in info.flavors:
        raise ConfigError(f"model '{model_uri}' is not a Keras model (flavors: {', '.join(sorted(info.flavors))}); evaluate takes models that lrlab trained")
    return info


def _model_class_names(model_uri: str, run_id: str) -> list[str]:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{contract.CLASS_NAMES_FILE}")
        names = json.loads(text)
    except (MlflowException, OSError, ValueError):
        raise ConfigError(f"model '{model_uri}' comes from run {run_id}, which has no readable {contract.CLASS_NAMES_FILE}; "
                          "evaluate needs the class names the model was trained with (lrlab logs them with every model)") from None
    if not (isinstance(names, list) and names and all(isinstance(name, str) for name in names)):
        raise ConfigError(f"{contract.CLASS_NAMES_FILE} of run {run_id} is not a list of class names")
    return names


def _image_size(model_uri: str, info, requested: int | None, num_classes: int) -> int:
    """The model's input size (from its signature), checked against --image-size."""
    signature = info.signature
    shape = output = None
    if signature is not None and signature.inputs is not None:
        try:
            shape = tuple(signature.inputs.inputs[0].shape)
            output = tuple(signature.outputs.inputs[0].shape)
        except (AttributeError, IndexError, TypeError):
            shape = output = None
    if output and output[-1] not in (-1, num_classes):
        raise ConfigError(f"model '{model_uri}' predicts {output[-1]} classes but its {contract.CLASS_NAMES_FILE} names {num_classes}")
    fixed = shape[1] if shape and len(shape) == 4 and shape[1] == shape[2] and shape[1] > 0 else None
    if requested is None:
        if fixed is None:
            raise ConfigError(f"model '{model_uri}' does not say its input size; give --image-size")
        return int(fixed)
    if fixed is not None and requested != fixed:
        raise ConfigError(f"model '{model_uri}' takes {fixed}x{fixed} images (got image-size {requested}); use --image-size auto")
    return requested


def _registered_version(model_uri: str) -> str | None:
    """The registry version behind models:/NAME@ALIAS or models:/NAME/N (an alias moves; the version does not)."""
    import re

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))/?", model_uri)
    if not match:
        return None
    name, alias, number = match.groups()
    if number:
        return number
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _trained_on(run_id: str, folder: Path) -> bool:
    """Whether the model's training run trained on images of `folder` (it was split by val_split, or is train/)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        report = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{contract.DATA_REPORT_FILE}"))
        source = Path(report["source"]).expanduser().resolve()
    except (MlflowException, OSError, ValueError, KeyError, TypeError):
        return False
    trained = source if report.get("layout") == "split" else source / "train"
    return folder.resolve() == trained


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(f"'{name}'" for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def predict(checked: Checked, batch_size: int):
    """(labels, probabilities) for every image, through the same decoder training uses."""
    import mlflow
    import numpy as np
    import tensorflow as tf

    from train.data import decode_image

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

    from train.report import confusion_matrix

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


def evaluate(checked: Checked, batch_size: int, image_size_option: str = "auto") -> Evaluation:
    """Predict every image, log the run, print the table; return what was logged."""
    import mlflow
    import pandas as pd

    from train import tracking
    from train.report import confusion_matrix_figure

    labels, probabilities = predict(checked, batch_size)
    predicted = probabilities.argmax(axis=1)
    accuracy, rows, matrix = per_class_table(labels, predicted, checked.class_names)

    folder = checked.folder.resolve()
    data_name = "demo" if checked.data == "demo" else (folder.name if checked.split == "all" else f"{folder.parent.name}/{folder.name}")
    name = f"evaluate {checked.model_uri} on {data_name}"
    under_mlflow_run = "MLFLOW_RUN_ID" in os.environ  # `mlflow run` started the run: log into it
    with mlflow.start_run(**({} if under_mlflow_run else {"run_name": name})) as run:
        if under_mlflow_run and tracking._GENERATED_RUN_NAME.match(run.info.run_name or ""):
            mlflow.set_tag("mlflow.runName", name)
        mlflow.set_tags({contract.TAG_KIND: contract.KIND_EVALUATE, contract.TAG_EVALUATED_RUN_ID: checked.model_run_id})
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
        mlflow.log_text(files.to_csv(index=False), contract.EVAL_PREDICTIONS_FILE)
        figure = confusion_matrix_figure(labels, predicted, checked.class_names)
        figure.axes[0].set_title(f"{data_name}: {len(labels)} images, accuracy {accuracy:.3f}")
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
        lines.append(f"  note: no images of {_listing(checked.missing_classes)}; their recall is not measured")
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

    return train_main(argv, command=command, prog_name="python -m train.evaluate")


if __name__ == "__main__":
    sys.exit(main())
