"""A run's first epoch (Keras traces the training step in it) as lrlab compiles the model, against Keras's own way.

Side by side, in turn, each in a fresh process: the project's model (`build_model`, MobileNetV2,
scratch, 64 px, alpha 0.35 by default), then `fit` on random images for two epochs, compiled
three ways:
- `keras`: a plain `keras.optimizers.Adam`, which Keras builds inside the first trace;
- `fused`: `optimizer_for` (Adam, its update fused: train/model/fused_adam.py), built in the trace;
- `lrlab`: `compile_for`, what training does: the fused Adam and the accuracy metric, their variables
  made before fit (a variable made in the trace makes TensorFlow trace the step twice);
- `named_metric`: the same, but the metric named by a string (`metrics=["accuracy"]`), which Keras
  makes inside the first trace.
Reported: the first epoch (trace + one epoch; for lrlab the eager build is counted in it) and
the second (the steps alone).

    python bench/bench_trace.py [--repeats 3] [--image-size 64] [--alpha 0.35] [--model mobilenet_v2]
        [--variants lrlab,named_metric,fused,keras]

Exits 1 when the first variant's first epoch (lrlab's, by default) is not faster than each other's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import json, sys, time
import numpy as np
import keras
from train.model.build import build_model
from train.run.trainer import compile_for, optimizer_for
from tests.conftest import tiny_config

variant, size, alpha, model_name = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
config = tiny_config(image_size=size, alpha=alpha, model=model_name)
model = build_model(6, config, 0.9)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (288, size, size, 3)).astype("uint8")
y = rng.integers(0, 6, 288)
seconds = []
for epoch in range(2):
    started = time.perf_counter()
    if epoch == 0 and variant == "lrlab":
        compile_for(model, config, accuracy=True)
    elif epoch == 0 and variant == "named_metric":
        model.compile(optimizer=optimizer_for(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.optimizer.build(model.trainable_variables)
    elif epoch == 0:
        optimizer = optimizer_for(config) if variant == "fused" else keras.optimizers.Adam(config.lr)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(x[:72], y[:72]), shuffle=False)
    seconds.append(time.perf_counter() - started)
print(json.dumps({"first": seconds[0], "second": seconds[1]}))
"""


def measure(variant: str, args) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, variant, str(args.image_size), str(args.alpha), args.model],
                          capture_output=True, text=True, check=True, env={"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--variants", default="lrlab,named_metric,fused,keras", help="comma-separated; the first is compared with the others")
    args = parser.parse_args(argv)
    variants = tuple(args.variants.split(","))
    results: dict[str, list[dict]] = {variant: [] for variant in variants}
    for repeat in range(args.repeats):
        turn = repeat % len(variants)
        for variant in variants[turn:] + variants[:turn]:  # each variant takes each place in turn
            started = time.perf_counter()
            results[variant].append(measure(variant, args))
            print(f"repeat {repeat + 1} {variant}: first epoch {results[variant][-1]['first']:.1f} s, second {results[variant][-1]['second']:.1f} s "
                  f"(process {time.perf_counter() - started:.0f} s)", flush=True)
    medians = {variant: {key: statistics.median(r[key] for r in rows) for key in ("first", "second")} for variant, rows in results.items()}
    reference, others = variants[0], variants[1:]
    print(f"medians of {args.repeats}, {reference} ({medians[reference]['first']:.1f} s first epoch, {medians[reference]['second']:.1f} s second) against:")
    for variant in others:
        theirs, ours = medians[variant], medians[reference]
        print(f"  {variant}: first epoch {theirs['first']:.1f} s ({reference} takes {ours['first'] / theirs['first']:.2f}x); "
              f"second {theirs['second']:.1f} s ({ours['second'] / theirs['second']:.2f}x)")
    return 0 if all(medians[reference]["first"] < medians[variant]["first"] for variant in others) else 1


if __name__ == "__main__":
    sys.exit(main())
