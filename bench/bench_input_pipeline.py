"""Input pipeline vs model: is the model ever waiting for data?

Measures, in one process, the images/s of the tf.data training pipeline alone (iterated
with nothing consuming it, epochs 1.. so from the cache, as in training) and the
training images/s of the model on the same pipeline (the `images_per_second` the project
logs, epochs 1..). The pipeline must be at least --min-ratio (3x) faster.

    python bench/bench_input_pipeline.py [--image-size 96] [--epochs 4]

Exits 1 when the ratio is below --min-ratio.
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
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--min-ratio", type=float, default=3.0)
    args = parser.parse_args()
    store = tempfile.mkdtemp(prefix="bench-pipeline-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    os.chdir(store)  # a new experiment's artifacts go to ./mlruns: keep them out of the checkout

    from train.config import TrainConfig
    from train.data.pipeline import make_datasets
    from train.run.preflight import preflight
    from train.run.trainer import train

    config = TrainConfig(data="demo", stage="scratch", weights="none", lr=1e-3, epochs=args.epochs, image_size=args.image_size, alpha=args.alpha, augment=args.augment, experiment="bench")
    checked = preflight(config)
    train_data, _ = make_datasets(checked.report, checked.images, config.batch_size, config.seed, config.augment)
    rates = []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        images = sum(int(batch[0].shape[0]) for batch in train_data)
        if epoch > 0:
            rates.append(images / (time.perf_counter() - started))
    pipeline = statistics.median(rates)
    result = train(config, checked)
    model = statistics.median(row["images_per_second"] for row in result.history[1:])
    ratio = pipeline / model
    print(f"\n{args.image_size} px, augment={args.augment}, {len(checked.report.train)} training images, epochs 1..{args.epochs - 1}")
    print(f"input pipeline alone : {pipeline:,.0f} images/s")
    print(f"model training       : {model:,.0f} images/s")
    print(f"ratio pipeline/model : {ratio:.1f}x (at least {args.min_ratio}x)")
    return 0 if ratio >= args.min_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
