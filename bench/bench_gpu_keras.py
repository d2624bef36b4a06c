"""Training images/s of the project's models on a GPU, mixed precision off vs on.

Runs the model factory (`train.model.build.build_model`) under whatever Keras backend is
installed (KERAS_BACKEND: tensorflow, jax or torch) on synthetic in-memory images, so it
measures the model step alone, not the input pipeline. Each configuration: a warm-up
epoch (compilation), then timed epochs; float32 and mixed_float16 side by side in one run.

    KERAS_BACKEND=jax python bench/bench_gpu_keras.py [--image-size 224] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import sys
import time


def measure(model_name: str, stage: str, policy: str, args) -> float:
    import keras
    import numpy as np

    from train.config import TrainConfig
    from train.model.build import build_model

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    config = TrainConfig(model=model_name, stage=stage, weights="none", image_size=args.image_size, alpha=1.0, lr=1e-3)
    model = build_model(10, config, 0.99 if stage == "scratch" else None)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size * args.steps, args.image_size, args.image_size, 3)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 10, len(images))
    model.fit(images, labels, batch_size=args.batch_size, epochs=1, verbose=0)  # compile + warm up
    started = time.perf_counter()
    model.fit(images, labels, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    return args.epochs * len(images) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    import keras

    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, {args.image_size} px, batch {args.batch_size}")
    for model_name, stage in (("mobilenet_v2", "scratch"), ("mobilenet_v2", "full"), ("efficientnet_b0", "full")):
        fp32 = measure(model_name, stage, "float32", args)
        fp16 = measure(model_name, stage, "mixed_float16", args)
        print(f"{model_name:<16} {stage:<8} float32 {fp32:8.0f} img/s   mixed_float16 {fp16:8.0f} img/s   speed-up {fp16 / fp32:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
