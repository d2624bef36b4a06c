"""A run's time outside its epochs, against a bare process that builds and compiles the same model.

For each class count, a folder of photo-sized JPEGs is written to a temp dir. Side by side:

- bare: a fresh process imports TensorFlow, builds the project's model and compiles it;
- run: a fresh process runs `train()` for one epoch at 64 px on that folder, into a new
  SQLite store, with a timer around each step (interpreter start and exit, imports,
  tracking store, scan, image preparation, model build, run records, fit outside its
  epochs, final predictions, confusion matrix, model logging, the rest).

Outside-epoch time = the run process's wall time - its epoch_seconds (the first epoch
includes Keras' graph tracing, which any training pays). The goal is at most 2x the bare
process plus a few seconds (--slack). A machine's very first store (the empty store that
later ones copy) is made before the measurements and its time printed on its own.

    python bench/bench_run_overhead.py [--classes 6,101] [--per-class 12] [--repeats 1]

Exits 1 when a run's outside-epoch time is above 2 x bare + slack.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

IMAGE_SIZE, ALPHA, BATCH = 64, 0.35, 32
PHOTO = (512, 384)  # Food-101's photos are about this size


def write_folder(folder: Path, classes: int, per_class: int) -> Path:
    """JPEGs of smooth random colour fields (they compress like photos, not like noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(classes):
        class_folder = folder / f"class_{index:03d}"
        class_folder.mkdir(parents=True, exist_ok=True)
        for image in range(per_class):
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(small).resize(PHOTO, Image.BICUBIC).save(class_folder / f"{image}.jpg", quality=90)
    return folder


def config_values(data: Path, classes: int) -> dict:
    return {"data": str(data), "image_size": IMAGE_SIZE, "alpha": ALPHA, "weights": "none", "epochs": 1, "batch_size": BATCH,
            "lr": 1e-3, "stage": "scratch", "experiment": f"overhead-{classes}"}


def bare_child(values: dict, classes: int) -> dict:
    """Import TensorFlow, build and compile the model: the floor any run pays."""
    import keras
    import tensorflow  # noqa: F401 - the import is what is measured

    from train.config import TrainConfig
    from train.model.build import build_model

    model = build_model(classes, TrainConfig(**values), 0.9)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return {}


class Timers:
    """Seconds spent inside named functions, by wrapping them where the trainer looks them up."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, module, attribute: str, name: str) -> None:
        function = getattr(module, attribute)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        setattr(module, attribute, timed)


def run_child(values: dict, classes: int) -> dict:
    """One real training run, timed step by step."""
    started = time.perf_counter()
    import keras
    import mlflow  # noqa: F401

    from train.config import TrainConfig
    from train.run import preflight as preflight_module
    from train.run import trainer
    from train.tracking import store as tracking_store

    imports = time.perf_counter() - started
    timers = Timers()
    timers.wrap(tracking_store, "connect", "tracking store")
    timers.wrap(preflight_module, "scan", "scan")
    timers.wrap(preflight_module, "open_images", "image preparation")
    timers.wrap(trainer, "model_for", "model build")
    timers.wrap(keras.Model, "compile", "model build")
    timers.wrap(trainer, "_start_run_records", "run records")
    timers.wrap(keras.Model, "fit", "fit")
    timers.wrap(trainer, "_validation_predictions", "final predictions")
    timers.wrap(trainer, "log_confusion_matrix", "confusion matrix")
    timers.wrap(trainer, "_log_model", "model logging")
    config = TrainConfig(**values)
    checked = preflight_module.preflight(config)
    result = trainer.train(config, checked)
    epochs = sum(row["epoch_seconds"] for row in result.history)
    seconds = timers.seconds
    seconds["fit outside its epochs"] = seconds.pop("fit") - epochs  # set-up, the epoch checkpoints, clean-up
    return {"imports": imports, **seconds, "epochs": epochs}


def child_main(kind: str, values_json: str, classes: int, out: str) -> None:
    values = json.loads(values_json)
    measured = (bare_child if kind == "bare" else run_child)(values, classes)
    Path(out).write_text(json.dumps({**measured, "child_started": CHILD_STARTED, "child_ended": time.time()}))


def measure(kind: str, values: dict, classes: int, work: Path) -> dict:
    """Wall time of a fresh process (interpreter start included) and what it timed inside."""
    out = work / f"{kind}-{classes}.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started, wall_started = time.perf_counter(), time.time()
    subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(values), str(classes), str(out)],
                   cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    wall, wall_ended = time.perf_counter() - started, time.time()
    measured = json.loads(out.read_text())
    start_up = measured.pop("child_started") - wall_started
    exit_seconds = wall_ended - measured.pop("child_ended")
    return {"wall": wall, "interpreter start and exit": start_up + exit_seconds, **measured}


STEPS = ("interpreter start and exit", "imports", "tracking store", "scan", "image preparation", "model build", "run records",
         "fit outside its epochs", "final predictions", "confusion matrix", "model logging")


def report(classes: int, images: int, bare: float, run: dict, slack: float) -> bool:
    outside = run["wall"] - run["epochs"]
    timed = sum(run.get(step, 0.0) for step in STEPS)
    print(f"\n{classes} classes, {images} JPEGs of {PHOTO[0]}x{PHOTO[1]}, {IMAGE_SIZE} px, 1 epoch")
    print(f"  bare process (import TensorFlow, build + compile): {bare:6.1f} s")
    print(f"  run process: {run['wall']:6.1f} s, of which the epoch {run['epochs']:.1f} s, outside it {outside:.1f} s:")
    for step in STEPS:
        print(f"    {step:<26}{run.get(step, 0.0):6.1f} s")
    print(f"    {'rest':<26}{outside - timed:6.1f} s  (devices, datasets, history, metrics flush, run end)")
    ok = outside <= 2 * bare + slack
    print(f"  outside-epoch / bare: {outside / bare:.2f}x (goal <= 2x + {slack:g} s: {'met' if ok else 'MISSED'})")
    return ok


def first_store(work: Path) -> float:
    """Make the empty-store template, as a machine's first run does, so each measured run starts a new store as usual."""
    from train.tracking import store as tracking_store

    started = time.perf_counter()
    tracking_store._create_sqlite_tables_once(f"sqlite:///{work / 'first.db'}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="6,101")
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=1, help="medians of this many bare and run processes, alternated")
    parser.add_argument("--slack", type=float, default=5.0, help="the 'few seconds' over 2x bare")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    os.environ.setdefault("LRLAB_CACHE", str(work / "cache"))
    print(f"first SQLite store on this machine (the empty store copied by every later one): {first_store(work):.1f} s, once")
    ok = True
    for classes in (int(c) for c in args.classes.split(",")):
        data = write_folder(work / f"data-{classes}", classes, args.per_class)
        values = config_values(data, classes)
        bares, runs = [], []
        for repeat in range(args.repeats):
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow-{classes}-{repeat}.db"  # a new store, as a first run in a folder has
            bares.append(measure("bare", values, classes, work)["wall"])
            runs.append(measure("run", values, classes, work))
        run = {key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]}
        ok &= report(classes, classes * args.per_class, statistics.median(bares), run, args.slack)
    return 0 if ok else 1


if __name__ == "__main__":
    CHILD_STARTED = time.time()  # as early as the child can tell: after the interpreter and this module's imports
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(main())
