"""Names that training, sweeps and the dashboard share.

This module is the one place each name is written. It imports nothing heavy, so the
dashboard can read it without loading TensorFlow. Change a name only in a commit that
changes every reader too.
"""

import os

# MLflow 3's own default store; the file store (./mlruns) is deprecated.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "lr-study"

# Logged once per epoch with step = epoch index from 0.
LOSS = "loss"
ACCURACY = "accuracy"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
LEARNING_RATE = "learning_rate"
EPOCH_SECONDS = "epoch_seconds"
IMAGES_PER_SECOND = "images_per_second"
EPOCH_METRICS = (
    LOSS,
    ACCURACY,
    VAL_LOSS,
    VAL_ACCURACY,
    LEARNING_RATE,
    EPOCH_SECONDS,
    IMAGES_PER_SECOND,
)

# Logged once, at the end of training.
BEST_VAL_ACCURACY = "best_val_accuracy"
BEST_EPOCH = "best_epoch"
# Also at the end, so that a finished run's summary (the dashboard's table, gap and verdicts) needs no
# history: the train accuracy at best_epoch (gap = it - best_val_accuracy), the epochs trained and the
# median images/s over them.
ACCURACY_AT_BEST = "accuracy_at_best"
EPOCHS_TRAINED = "epochs_trained"
MEDIAN_IMAGES_PER_SECOND = "median_images_per_second"
SUMMARY_METRICS = (BEST_VAL_ACCURACY, BEST_EPOCH, ACCURACY_AT_BEST, EPOCHS_TRAINED, MEDIAN_IMAGES_PER_SECOND)
# On a training run, once: its model's accuracy on the held-out test/ split (never used to train or select).
TEST_ACCURACY = "test_accuracy"
TEST_ACCURACY_LOW = "test_accuracy_low"  # its 95% Wilson interval for a proportion (test images right / test images)
TEST_ACCURACY_HIGH = "test_accuracy_high"
TEST_METRICS = (TEST_ACCURACY, TEST_ACCURACY_LOW, TEST_ACCURACY_HIGH)

# What reading the data cost a run, logged once (step 0), and whether the prepared images were reused.
DATA_SCAN_SECONDS = "data_scan_seconds"
DATA_FILES_OPENED = "data_files_opened"  # files the scan opened (the rest were known from an earlier scan)
DATA_PREPARE_SECONDS = "data_prepare_seconds"  # preparing (or opening) the decoded-image cache
DATA_IMAGES_DECODED = "data_images_decoded"  # images decoded to prepare the cache: 0 when it was reused
DATA_CACHE_REUSED = "data_cache_reused"  # 1 when the decoded images came from an earlier run's cache
DATA_METRICS = (DATA_SCAN_SECONDS, DATA_FILES_OPENED, DATA_PREPARE_SECONDS, DATA_IMAGES_DECODED, DATA_CACHE_REUSED)

# Tags.
TAG_KIND = "kind"
KIND_TRAIN = "train"
KIND_SWEEP = "sweep"
KIND_LR_FIND = "lr_find"
KIND_EVALUATE = "evaluate"
KIND_LAUNCHER = "launcher"  # a run `mlflow run` made that lrlab did not train in (-P resume=ID continued run ID): empty
TAG_INIT_RUN_ID = "init_run_id"  # the run whose model a finetune run started from
TAG_STOP_REASON = "stop_reason"  # why a run ended early (signal, nan loss, pruned, stale)
TAG_HOST = "host"  # machine and process that train the run, to tell a stale run from a live one
TAG_PID = "pid"
TAG_HEARTBEAT = "heartbeat"  # on a training run: the time (ms since 1970) its process last said it was alive
TAG_SWEEP_STUDY = "sweep_study"  # on a sweep's parent run and every child: which sweep
TAG_SWEEP_PHASE = "sweep_phase"  # on a child: the plan phase it belongs to
TAG_SWEEP_CONFIG = "sweep_config"  # on a child: the configuration's key (a resumed sweep skips it)
TAG_DATA_CACHE = "data_cache"  # where the run's decoded images were kept (memory, disk, none) and the cache entry
TAG_AT_CHANCE = "at_chance"  # "true" on a training run whose best val_accuracy never left chance (1 / num_classes)
TAG_PRUNED = "pruned"  # "true" on a child that Optuna's pruner stopped early
CHAMPION_ALIAS = "champion"  # the registry alias of a sweep's overall best model

# Artifacts of a training run.
MODEL_ARTIFACT = "model"
CLASS_NAMES_FILE = "class_names.json"
HISTORY_FILE = "history.csv"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
CONFUSION_MATRIX_DATA_FILE = "confusion_matrix.json"  # class_names, counts[true][predicted], most_confused pairs
DATA_REPORT_FILE = "data_report.json"

# Parameters the dashboard groups and filters by (all logged as MLflow params).
PARAM_LR = "lr"
PARAM_STAGE = "stage"
PARAM_MODEL = "model"
PARAM_SCHEDULE = "schedule"
PARAM_SEED = "seed"
PARAM_DATA = "data"
PARAM_INIT_MODEL = "init_model"
PARAM_NUM_CLASSES = "num_classes"  # logged by training from the data: the dashboard's chance line is 1 / this

# The learning-rate range test (kind=lr_find): loss and lr per step, and its suggestion.
LR_FIND_LOSS = "lr_find_loss"
LR_FIND_LR = "lr_find_lr"
SUGGESTED_LR = "suggested_lr"
LR_FIND_BATCH_LOSS = "lr_find_batch_loss"  # per step: the raw batch loss (LR_FIND_LOSS is its smoothed curve)
LR_STEEPEST = "lr_steepest"  # the rate of the steepest descent of the smoothed loss
LR_MIN_LOSS_DIV10 = "lr_min_loss_div10"  # a tenth of the rate at the minimum loss
LR_FIND_SECONDS = "lr_find_seconds"  # how long the range test took

# MLflow's limit on metrics in one log_batch call (mlflow.utils.validation.MAX_METRICS_PER_BATCH, the
# REST API's too); every batched write splits at it.
LOG_BATCH_MAX = 1000
STAGES = ("scratch", "full", "head", "finetune")
MODELS = ("mobilenet_v2", "efficientnet_b0")
SCHEDULES = ("constant", "exponential", "step", "cosine")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
# The equivalence margin's default: two groups whose difference lies inside ±this (of accuracy) are
# `equivalent` (the dashboard, a sweep's verdicts and racing, a plan's `margin`).
DEFAULT_MARGIN = 0.01


def tracking_uri() -> str:
    """The tracking URI every part uses: MLFLOW_TRACKING_URI, else the default store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


# `python -m train.tools.evaluate` (kind=evaluate): a model's accuracy on an image folder.
TAG_EVALUATED_RUN_ID = "evaluated_run_id"  # the training run that logged the evaluated model
TAG_EVALUATED_SPLIT = "evaluated_split"  # on an evaluate run: "test" (the held-out split, evaluate_on_test), "val" or "all"
PARAM_MODEL_URI = "model_uri"  # the model evaluated, as given (runs:/..., models:/NAME@ALIAS, ...)
EVAL_ACCURACY = ACCURACY  # fraction of the folder's images predicted right
EVAL_PRECISION_PREFIX = "precision_"  # + class_metric_suffixes(class names)[i]
EVAL_RECALL_PREFIX = "recall_"
EVALUATION_FILE = "evaluation.json"  # accuracy, per-class table, confusion matrix, images skipped
EVAL_CONFUSION_MATRIX_FILE = CONFUSION_MATRIX_FILE
EVAL_PREDICTIONS_FILE = "predictions.csv"  # one row per image: path, true class, predicted class, probability


def class_metric_suffixes(class_names: list[str]) -> list[str]:
    """Metric-name-safe, distinct suffixes for class names, in order ('red fox' -> 'red_fox').

    Letters (any script), digits, '_', '-' and '.' are kept; anything else becomes '_'
    (MLflow refuses most punctuation, and spaces, slashes and colons read badly in names).
    Names that clash after that get '_2', '_3', ... in order.
    """
    import re

    suffixes: list[str] = []
    for name in class_names:
        base = re.sub(r"[^\w.\-]", "_", name) or "class"
        suffix, count = base, 1
        while suffix in suffixes:
            count += 1
            suffix = f"{base}_{count}"
        suffixes.append(suffix)
    return suffixes
