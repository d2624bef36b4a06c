"""A run's first epoch (Keras traces the training step in it) with lrlab's fused Adam against Keras's own.

Side by side, alternating, each in a fresh process: the project's model (`build_model`, MobileNetV2,
scratch, 64 px, alpha 0.35 by default) compiled with `optimizer_for` (Adam, its update fused:
train/model/fused_adam.py) or with a plain `keras.optimizers.Adam`, then `fit` on random images
for two epochs. Reported: the first epoch (trace + one epoch), the second (the steps alone).

    python bench/bench_trace.py [--repeats 3] [--image-size 64] [--alpha 0.35] [--model mobilenet_v2]

Exits 1 when the fused first epoch is not faster than Keras's own.
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
from train.run.trainer import optimizer_for
from tests.conftest import tiny_config

variant, size, alpha, model_name = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
config = tiny_config(image_size=size, alpha=alpha, model=model_name)
model = build_model(6, config, 0.9)
optimizer = optimizer_for(config) if variant == "fused" else keras.optimizers.Adam(config.lr)
model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (288, size, size, 3)).astype("uint8")
y = rng.integers(0, 6, 288)
seconds = []
for _ in range(2):
    started = time.perf_counter()
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
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {"fused": [], "keras": []}
    for repeat in range(args.repeats):
        for variant in ("fused", "keras") if repeat % 2 == 0 else ("keras", "fused"):
            started = time.perf_counter()
            results[variant].append(measure(variant, args))
            print(f"repeat {repeat + 1} {variant}: first epoch {results[variant][-1]['first']:.1f} s, second {results[variant][-1]['second']:.1f} s "
                  f"(process {time.perf_counter() - started:.0f} s)", flush=True)
    medians = {variant: {key: statistics.median(r[key] for r in rows) for key in ("first", "second")} for variant, rows in results.items()}
    fused, keras_own = medians["fused"], medians["keras"]
    print(f"first epoch (trace + epoch): fused {fused['first']:.1f} s vs Keras's Adam {keras_own['first']:.1f} s = {fused['first'] / keras_own['first']:.2f}x; "
          f"second epoch: {fused['second']:.1f} s vs {keras_own['second']:.1f} s = {fused['second'] / keras_own['second']:.2f}x (medians of {args.repeats})")
    return 0 if fused["first"] < keras_own["first"] else 1


if __name__ == "__main__":
    sys.exit(main())
