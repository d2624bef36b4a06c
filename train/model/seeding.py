"""Seeding a run: Python, NumPy and Keras from the run's seed; TensorFlow's global seed once.

`keras.utils.set_random_seed` also sets TensorFlow's global seed, and TensorFlow clears its
kernel caches whenever that is set: a model a sweep keeps for its next child
(train/model/pool.py) would then rebuild its traced functions' kernels, 3 s at 96 px on 2
cores, a pruned child's epoch and a half. Every random op a run makes takes its seed
explicitly (the tf.data shuffle is given the run's seed; weights, dropout and augmentation
draw from Keras seed generators seeded through Python's `random`), so TensorFlow's global
seed only has to be fixed, not changed per run: it is set to TENSORFLOW_SEED once per process.
"""

from __future__ import annotations

import random

import numpy as np

TENSORFLOW_SEED = 0
_tensorflow_seeded = False


def seed_run(seed: int) -> None:
    global _tensorflow_seeded
    if not _tensorflow_seeded:
        import tensorflow as tf

        tf.random.set_seed(TENSORFLOW_SEED)
        _tensorflow_seeded = True
    random.seed(seed)  # Keras' initializers and seed generators draw their seeds from here
    np.random.seed(seed)
