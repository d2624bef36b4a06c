"""Tracking overhead: the project's training vs a bare `model.fit`, side by side in one process.

Both train the same model on the same tf.data pipeline for the same epochs; the project adds
its callbacks (learning-rate schedule, NaN guard, per-epoch MLflow logging to a SQLite
store). Epoch 0 (graph tracing, cache filling) is left out of both. The two are run
alternately, `--repeats` times each, and the medians compared. The fixed end-of-run cost
(history, confusion matrix, model logging) is printed beside it.

    python bench/bench_tracking_overhead.py [--epochs 5] [--image-size 96] [--repeats 2]

Exits 1 when the ratio is above --max-ratio (1.05).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-ratio", type=float, default=1.05)
    args = parser.parse_args()
    store = tempfile.mkdtemp(prefix="bench-tracking-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    os.chdir(store)  # a new experiment's artifacts go to ./mlruns: keep them out of the checkout

    import keras

    from train.config import TrainConfig
    from train.data.pipeline import make_datasets
    from train.model.build import auto_bn_momentum, build_model
    from train.run.preflight import preflight
    from train.run.trainer import train

    config = TrainConfig(data="demo", stage="scratch", weights="none", lr=1e-3, epochs=args.epochs, image_size=args.image_size, alpha=args.alpha, experiment="bench")
    checked = preflight(config)

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    def bare() -> float:
        keras.utils.set_random_seed(config.seed)
        train_data, val_data = make_datasets(checked.report, checked.images, config.batch_size, config.seed, False)
        steps = -(-len(checked.report.train) // config.batch_size)
        model = build_model(len(checked.report.class_names), config, auto_bn_momentum(steps))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        timer = EpochTimer()
        model.fit(train_data, validation_data=val_data, epochs=config.epochs, callbacks=[timer], shuffle=False, verbose=0)
        return sum(timer.seconds[1:])

    def project() -> tuple[float, float]:
        started = time.perf_counter()
        result = train(config, checked)
        total = time.perf_counter() - started
        epochs = [row["epoch_seconds"] for row in result.history]
        return sum(epochs[1:]), total - sum(epochs)

    bare_times, project_times, fixed_costs = [], [], []
    for _ in range(args.repeats):
        bare_times.append(bare())
        seconds, fixed = project()
        project_times.append(seconds)
        fixed_costs.append(fixed)
    ratio = statistics.median(project_times) / statistics.median(bare_times)
    print(f"\nepochs 1..{args.epochs - 1}, {args.image_size} px, {len(checked.report.train)} images, {args.repeats} repeats each")
    print(f"bare model.fit       : {statistics.median(bare_times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in bare_times)})")
    print(f"project (MLflow)     : {statistics.median(project_times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in project_times)})")
    print(f"ratio project / bare : {ratio:.3f} (limit {args.max_ratio})")
    print(f"fixed cost per run outside the epochs (set-up, model logging, artifacts): {statistics.median(fixed_costs):.1f} s")
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
