"""Every training option, its default and its check: the one place they are written.

`TrainConfig` is what `python -m train`, the MLproject entry point and the sweeps all
build. Each field's `help` is the command-line help and the README's parameter table.
`validate()` runs before anything expensive (TensorFlow, data, MLflow) so bad input costs
seconds, not a crashed epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from train import contract
from train.errors import ConfigError  # what validate() raises; importable from here too

CACHE_CHOICES = ("auto", "memory", "disk", "none")
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # the MobileNetV2 widths Keras has ImageNet weights for
# Upper bounds: beyond them a run fails after minutes of work (memory) or is a typo.
MAX_IMAGE_SIZE = 1024
MAX_BATCH_SIZE = 4096
MAX_EPOCHS = 10_000
MAX_SEED = 2**32 - 1  # numpy's seed range


# A param's role: what it says about a run. Runs whose configuration params are equal (by type)
# are repeats of one configuration, whatever their repeat and bookkeeping params say.
CONFIGURATION = "configuration"  # what was trained: it makes the experiment
REPEAT = "repeat"  # differs between repeats of one configuration (the seed, the model a finetune started from)
BOOKKEEPING = "bookkeeping"  # where and how a run was recorded or executed, not what was trained
ROLES = (CONFIGURATION, REPEAT, BOOKKEEPING)


def option(default, help_text: str, *, role: str = CONFIGURATION, stages=None, schedules=None, models=None, unless: str = "", traced: bool = True, canonical=None):
    """A TrainConfig field with its help and its role, written once; every list of params derives from it.

    `stages`, `schedules`, `models`: the only ones that use the param (None: all); a run of another
    one ignores it, so it neither splits nor names its group. `unless`: ignored when that param is
    non-empty (epochs_drop once milestones are given). `traced`: whether the param can change the
    traced Keras graph (the model pool reuses a model only across runs equal in every traced param).
    `canonical`: text -> one spelling of a str param ("40, 60" -> "40,60")."""
    metadata = {"help": help_text, "role": role, "stages": stages, "schedules": schedules, "models": models,
                "unless": unless, "traced": traced, "canonical": canonical}  # fmt: skip
    return field(default=default, metadata=metadata)


def _milestones_text(text: str) -> str:
    return ",".join(part.strip() for part in text.split(",") if part.strip())


BUILT = ("scratch", "full", "head")  # the stages that build a model (finetune loads init_model's, head and dropout included)


@dataclass
class TrainConfig:
    lr: float = option(1e-4, "Peak learning rate (after warm-up). Try 1e-3 from scratch, 1e-4..1e-5 for transfer, 1e-6 and below to fine-tune.", traced=False)
    epochs: int = option(10, "Number of epochs to train.", traced=False)
    batch_size: int = option(32, "Images per batch (split across devices under a distribution strategy).")
    data: str = option("demo", "Image folder (one sub-folder per class, or train/ and val/ each with class sub-folders), or 'demo' for the built-in generated data set.", traced=False)
    val_split: float = option(0.2, "Fraction of each class held out for validation, when the folder has no train/ and val/ sub-folders.", traced=False)
    image_size: int = option(224, f"Images are resized to image_size x image_size, from 32 to {MAX_IMAGE_SIZE}.")
    model: str = option("mobilenet_v2", "Architecture: mobilenet_v2 or efficientnet_b0.")
    alpha: float = option(1.0, "MobileNetV2 width multiplier (0.35, 0.5, 0.75, 1.0, 1.3, 1.4 have ImageNet weights).", models=("mobilenet_v2",), stages=BUILT)
    stage: str = option("full", "scratch: random weights, all layers train. full: pretrained base + new head, all train. head: base frozen, only the head trains. finetune: continue from init_model with every layer but BatchNormalization trainable.")
    weights: str = option("imagenet", "Base weights: imagenet (downloaded once to ~/.keras/models), none, or a path to a weights file. Ignored by scratch and finetune.", stages=("full", "head"), traced=False)
    init_model: str = option("", "MLflow model URI that finetune starts from: runs:/RUN_ID/model, models:/NAME@ALIAS or models:/NAME/VERSION.", role=REPEAT, stages=("finetune",))
    schedule: str = option("constant", "Learning-rate schedule: constant, exponential, step or cosine (any of them after warmup_epochs of linear warm-up).", traced=False)
    decay: float = option(0.1, "exponential: lr * exp(-decay * epoch).", schedules=("exponential",), traced=False)
    drop: float = option(0.5, "step: the factor applied at each drop.", schedules=("step",), traced=False)
    epochs_drop: int = option(10, "step: drop every epochs_drop epochs (when milestones is empty).", schedules=("step",), unless="milestones", traced=False)
    milestones: str = option("", "step: comma-separated epochs at which to drop instead, e.g. 40,60.", schedules=("step",), traced=False, canonical=_milestones_text)
    decay_epochs: int = option(0, "exponential: stop decaying after this many epochs (0 = never stop).", schedules=("exponential",), traced=False)
    warmup_epochs: int = option(0, "Linear warm-up, batch by batch, from near 0 to lr over this many epochs before the schedule starts.", traced=False)
    optimizer: str = option("adam", "Optimizer: adam, sgd (momentum 0.9) or rmsprop.")
    augment: bool = option(False, "Random flips, rotations and zooms on training images.")
    dropout: float = option(0.2, "Dropout rate before the classifier.", stages=BUILT)
    seed: int = option(42, "Seed for the train/validation split, shuffling, augmentation and initial weights.", role=REPEAT, traced=False)
    register_as: str = option("", "Register the trained model under this name, with the stage as alias (models:/NAME@head). Empty: don't register.", role=BOOKKEEPING, traced=False)
    bn_momentum: str = option("auto", "BatchNormalization momentum for layers that train from scratch. auto: 1 - 10/steps_per_epoch, clipped to [0.9, 0.99], so the moving statistics catch up within an epoch even on small data.", stages=("scratch",))
    mixed_precision: str = option("auto", "auto: float16 compute on GPUs with compute capability >= 7.0, float32 elsewhere. on / off force it.")
    xla: bool = option(False, "Compile the training step with XLA (jit_compile).")
    strategy: str = option("auto", "auto: MirroredStrategy over all GPUs when there are several. mirrored: always (on a CPU-only machine the CPU is split into 2 logical devices). none: one device.")
    cache: str = option("auto", "Where decoded images (uint8, at image_size) are kept: auto (in memory when they fit in a quarter of the available memory, else on disk), memory, disk (prepared once in the lrlab cache and reused by every run on the same files) or none (decode every epoch).", role=BOOKKEEPING, traced=False)
    deterministic: bool = option(False, "TensorFlow op determinism: the same seed gives the same per-epoch metrics, at some cost in speed.", role=BOOKKEEPING)
    experiment: str = option("", f"MLflow experiment (python -m train only; under mlflow run use --experiment-name). Default: MLFLOW_EXPERIMENT_NAME or '{contract.DEFAULT_EXPERIMENT}'.", role=BOOKKEEPING, traced=False)
    run_name: str = option("", "Run name. Default: '<stage> lr=<lr>', e.g. 'full lr=1e-05'.", role=BOOKKEEPING, traced=False)
    resume: str = option("", "ID of an unfinished run (KILLED, FAILED or stale) to continue from its last completed epoch, in the same run. Give the same parameters it had.", role=BOOKKEEPING, traced=False)

    def validate(self) -> TrainConfig:
        """Raise ConfigError for the first bad parameter; return self when all are fine."""
        for check in _CHECKS:
            check(self)
        return self

    @property
    def milestone_epochs(self) -> list[int]:
        return [int(part) for part in self.milestones.split(",") if part.strip()]

    @property
    def bn_momentum_value(self) -> float | None:
        """The fixed momentum, or None for auto."""
        return None if self.bn_momentum == "auto" else float(self.bn_momentum)

    def as_params(self) -> dict[str, str]:
        return {name: str(value) for name, value in dataclasses.asdict(self).items()}


def same_param(logged: str | None, wanted, name: str = "") -> bool:
    """Whether a logged param (text) says the same as `wanted`: "1e-06" is 1e-6, "true" is True.
    With the param's `name`, by its TrainConfig type (`''` is empty, as `mlflow run` logs an empty
    default). A param never logged says nothing, so it is not the same."""
    if logged is None:
        return False
    if name in _FIELDS:
        return _same(parse_param(name, logged), parse_param(name, wanted))
    if str(logged) == str(wanted):
        return True
    try:
        return float(logged) == float(wanted)
    except (TypeError, ValueError):
        return str(logged).lower() == str(wanted).lower()  # booleans: "true" from mlflow run, "True" from Python


def fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


# ---------------------------------------------------------------------------------------
# Params as logged -> one configuration: every list of "which params are the experiment" derives
# from the fields' metadata above.
#
# Params outside TrainConfig (`device`, and what training derives from the data: `num_classes`,
# `train_images`, `val_images`, `skipped_files`, `bn_momentum_used`) are records of what happened,
# not settings: they are equal whenever `data` (a configuration param) holds the same images, so
# they are left out of the configuration, and runs logged before they existed still group. A param
# a run lacks (logged before the field existed, or by hand with `log_batch`) takes the field's
# default: the value that run trained with.

_FIELDS = {spec.name: spec for spec in dataclasses.fields(TrainConfig)}
EMPTY_SPELLINGS = ("", "''", '""')  # `mlflow run` logs an empty default as ''
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def params_with_role(role: str) -> tuple[str, ...]:
    return tuple(name for name, spec in _FIELDS.items() if spec.metadata["role"] == role)


CONFIG_FIELDS = frozenset(_FIELDS)
RECORDED_PARAMS = ("device",)  # logged beside the fields: the machine a run trained on (bookkeeping too)
CONFIGURATION_PARAMS = params_with_role(CONFIGURATION)
REPEAT_PARAMS = params_with_role(REPEAT)  # seed, init_model
BOOKKEEPING_PARAMS = params_with_role(BOOKKEEPING)
VALUE_ONLY_PARAMS = frozenset(name for name, spec in _FIELDS.items() if not spec.metadata["traced"])


def parse_param(name: str, value):
    """One param, logged as text in any spelling (or typed), as its TrainConfig field's type:
    "3e-3" and "0.003" -> 0.003, "false" and "False" -> False, '' and "" -> "". Empty or missing
    (None) is the field's default for a number or a bool. Text that does not parse stays text (it
    then compares as text); a name that is no TrainConfig field is its text. Never logged (None):
    the field's default."""
    text = "" if value is None else str(value).strip()
    text = "" if text in EMPTY_SPELLINGS else text
    spec = _FIELDS.get(name)
    if spec is None:
        return text
    if value is None:
        return spec.default
    kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
    if kind == "str":
        canonical = spec.metadata["canonical"]
        return canonical(text) if canonical else text
    if text == "":
        return spec.default
    if kind == "bool":
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if kind == "int" and number.is_integer() else number


def run_values(params) -> dict:
    """Every TrainConfig field of a run, typed (`parse_param`), from its params as logged."""
    return {name: parse_param(name, params.get(name)) for name in _FIELDS}


def applies(name: str, values: dict) -> bool:
    """Whether a run with these typed values uses the param: `weights` is ignored by scratch and
    finetune, `decay` outside exponential, `epochs_drop` once milestones are given, ..."""
    meta = _FIELDS[name].metadata
    for key, param in (("stages", "stage"), ("schedules", "schedule"), ("models", "model")):
        if meta[key] is not None and values.get(param) not in meta[key]:
            return False
    return not (meta["unless"] and values.get(meta["unless"]))


def configuration(params, vary=REPEAT_PARAMS) -> dict:
    """The run's configuration: the typed value of every param that makes it (not bookkeeping,
    not in `vary`: by default the repeat params) and that the run's stage, schedule and model use.
    `params` is a run's params as logged (text in any spelling, as MLflow stores them) or typed."""
    values = run_values(params)
    return {name: value for name, value in values.items()
            if _FIELDS[name].metadata["role"] != BOOKKEEPING and name not in vary and applies(name, values)}  # fmt: skip


def configuration_key(params, vary=REPEAT_PARAMS) -> str:
    """`configuration` as one text: equal for exactly the runs of one configuration."""
    return key_of(configuration(params, vary))


def key_of(configuration: dict) -> str:
    """A configuration (typed) as one text: 3e-3 and 0.003 are one float, so one text."""
    return json.dumps(configuration, sort_keys=True, default=str)


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_numbers(config: TrainConfig) -> None:
    _require(math.isfinite(config.lr) and config.lr > 0, f"lr must be a number greater than 0 (got {config.lr}); try 1e-4")
    _require(1 <= config.epochs <= MAX_EPOCHS, f"epochs must be from 1 to {MAX_EPOCHS} (got {config.epochs})")
    _require(1 <= config.batch_size <= MAX_BATCH_SIZE, f"batch_size must be from 1 to {MAX_BATCH_SIZE} (got {config.batch_size}); try 32")
    _require(0 < config.val_split < 1, f"val_split must be between 0 and 1, exclusive (got {config.val_split}); try 0.2")
    _require(32 <= config.image_size <= MAX_IMAGE_SIZE, f"image_size must be from 32 to {MAX_IMAGE_SIZE} pixels for {config.model} (got {config.image_size}); try 224")
    _require(0 <= config.seed <= MAX_SEED, f"seed must be a whole number from 0 to {MAX_SEED} (got {config.seed})")
    _require(config.alpha > 0, f"alpha must be greater than 0 (got {config.alpha}); try 1.0 or 0.35")
    _require(0 <= config.dropout < 1, f"dropout must be in [0, 1) (got {config.dropout})")
    _require(config.decay >= 0, f"decay must be 0 or more (got {config.decay})")
    _require(0 < config.drop <= 1, f"drop must be in (0, 1] (got {config.drop}); try 0.5 or 0.1")
    _require(config.epochs_drop >= 1, f"epochs_drop must be at least 1 (got {config.epochs_drop})")
    _require(config.decay_epochs >= 0, f"decay_epochs must be 0 (never stop) or more (got {config.decay_epochs})")
    _require(0 <= config.warmup_epochs < config.epochs, f"warmup_epochs must be at least 0 and less than epochs={config.epochs} (got {config.warmup_epochs})")


def _check_choices(config: TrainConfig) -> None:
    choices = {
        "stage": contract.STAGES,
        "model": contract.MODELS,
        "schedule": contract.SCHEDULES,
        "optimizer": contract.OPTIMIZERS,
        "mixed_precision": ("auto", "on", "off"),
        "strategy": ("auto", "none", "mirrored"),
        "cache": CACHE_CHOICES,
    }
    for name, allowed in choices.items():
        value = getattr(config, name)
        _require(value in allowed, f"{name} must be one of {', '.join(allowed)} (got '{value}')")


def _check_text(config: TrainConfig) -> None:
    try:
        milestones = config.milestone_epochs
    except ValueError:
        raise ConfigError(f"milestones must be comma-separated whole epochs such as 40,60 (got '{config.milestones}')") from None
    _require(all(m > 0 for m in milestones) and milestones == sorted(set(milestones)), f"milestones must be increasing epochs above 0 (got '{config.milestones}')")
    if config.bn_momentum != "auto":
        try:
            momentum = float(config.bn_momentum)
        except ValueError:
            momentum = -1.0
        _require(0 < momentum < 1, f"bn_momentum must be 'auto' or a number between 0 and 1 (got '{config.bn_momentum}')")
    check_register_as(config.register_as)


def check_register_as(name: str, option: str = "register_as") -> None:
    """Before the first epoch (a sweep: before its first child): the registry refuses '/', ':', '..'."""
    if not name:
        return
    from mlflow.exceptions import MlflowException

    from train.tracking import mlflow_private

    try:
        mlflow_private.validate_model_name(name)  # the registry's own rule
    except MlflowException:
        raise ConfigError(f"{option} '{name}' is not a name the model registry accepts (no '/' or ':', and not '.' or '..'); try e.g. wildlife") from None


def _check_paths(config: TrainConfig) -> None:
    if config.stage == "finetune":
        _require(bool(config.init_model), "stage=finetune needs init_model, the MLflow model URI to start from, e.g. -P init_model=runs:/RUN_ID/model or models:/NAME@head")
    elif config.init_model:
        raise ConfigError(f"init_model is only used by stage=finetune (got stage={config.stage}); drop it or set -P stage=finetune")
    if config.weights not in ("imagenet", "none"):
        path = Path(config.weights).expanduser()
        _require(path.is_file(), f"weights file '{config.weights}' does not exist; give imagenet, none or the path of a weights file")
        _require(_is_weights_file(path), f"weights file '{config.weights}' is not a Keras weights file (HDF5 .weights.h5 or .h5, or a .keras file); give imagenet, none or such a file")
    elif config.weights == "imagenet" and config.stage in ("full", "head") and config.model == "mobilenet_v2":
        _require(config.alpha in IMAGENET_ALPHAS, f"alpha={config.alpha:g} has no ImageNet weights for mobilenet_v2; use one of {', '.join(f'{a:g}' for a in IMAGENET_ALPHAS)}, or -P weights=none")
    if config.data != "demo":
        path = Path(config.data).expanduser()
        _require(path.is_dir(), f"data folder '{config.data}' does not exist; give a folder with one sub-folder per class, or 'demo'")


def _is_weights_file(path: Path) -> bool:
    """What Keras' load_weights reads: an HDF5 file (.weights.h5, legacy .h5) or a .keras zip.
    Checked by name and first bytes here, so a wrong file fails before TensorFlow loads."""
    with open(path, "rb") as file:
        head = file.read(8)
    if path.name.endswith(".keras"):
        return head.startswith(b"PK\x03\x04")
    return path.name.endswith((".h5", ".hdf5")) and head == b"\x89HDF\r\n\x1a\n"


_CHECKS = (_check_choices, _check_numbers, _check_text, _check_paths)


def cache_root() -> Path:
    """Where generated and converted images live (LRLAB_CACHE overrides)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lrlab"
    return Path(os.environ.get("LRLAB_CACHE", default))
