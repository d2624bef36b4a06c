"""What `python -m train.tools.evaluate` checks before TensorFlow loads: the model, its classes, the images.

Every check that can fail on bad input (model URI, tracking store, folder, class names, image
size) raises ConfigError with one line; nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

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


def evaluation_folder(folder: Path) -> tuple[Path, str]:
    """The folder whose class sub-folders are evaluated, and which split that is."""
    if (folder / "train").is_dir():
        for split in SPLITS:
            if (folder / split).is_dir():
                return folder / split, split
    return folder, "all"


def check(model_uri: str, data: str, image_size: str = "auto", batch_size: int = 32, experiment: str = "") -> Checked:
    """Validate the input and scan the folder; raise ConfigError with one line. No TensorFlow."""
    from train.data.demo import demo_folder
    from train.tracking import runs as tracking
    from train.tracking import store as tracking_store

    if batch_size < 1:
        raise ConfigError(f"batch-size must be at least 1 (got {batch_size})")
    requested_size = _image_size_option(image_size)
    if not model_uri:
        raise ConfigError("--model-uri is required: runs:/RUN_ID/model, models:/NAME@ALIAS or models:/NAME/VERSION")
    root = demo_folder() if data == "demo" else Path(data).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data folder '{data}' does not exist; give a folder with one sub-folder per class, or 'demo'")

    folder, split = evaluation_folder(root)

    tracking_store.connect(experiment)  # also turns MLflow's download progress bars off (QUIET_ENV)
    info = _model_info(model_uri, tracking)
    class_names = _model_class_names(model_uri, info.run_id)
    trained_here = _trained_on(info.run_id, folder)
    size = _image_size(model_uri, info, requested_size, len(class_names))

    from train.data.scan import DataReport, _scan_classes, subfolder_names

    folder_classes = subfolder_names(folder)
    if not folder_classes:
        raise ConfigError(f"data folder '{folder}' has no class sub-folders; put each class's images in a sub-folder named after it ({listing(class_names)})")
    unknown = [name for name in folder_classes if name not in class_names]
    if unknown:
        raise ConfigError(f"class folder{'s' if len(unknown) > 1 else ''} {listing(unknown)} in '{folder}' "
                          f"{'are not classes' if len(unknown) > 1 else 'is not a class'} of model '{model_uri}' "
                          f"(its classes: {listing(class_names)}); rename or remove {'them' if len(unknown) > 1 else 'it'}")

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


def model_input_size(info) -> int | None:
    """The square input size a logged model's signature names (None when it names none)."""
    shape, _ = _signature_shapes(info)
    return int(shape[1]) if shape and len(shape) == 4 and shape[1] == shape[2] and shape[1] > 0 else None


def _signature_shapes(info) -> tuple[tuple | None, tuple | None]:
    signature = info.signature
    if signature is None or signature.inputs is None:
        return None, None
    try:
        return tuple(signature.inputs.inputs[0].shape), tuple(signature.outputs.inputs[0].shape)
    except (AttributeError, IndexError, TypeError):
        return None, None


def _image_size(model_uri: str, info, requested: int | None, num_classes: int) -> int:
    """The model's input size (from its signature), checked against --image-size."""
    _, output = _signature_shapes(info)
    if output and output[-1] not in (-1, num_classes):
        raise ConfigError(f"model '{model_uri}' predicts {output[-1]} classes but its {contract.CLASS_NAMES_FILE} names {num_classes}")
    fixed = model_input_size(info)
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


def listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(f"'{name}'" for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
