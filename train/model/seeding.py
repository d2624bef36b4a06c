"""Seeding a run: Python, NumPy and Keras from the run's seed; TensorFlow's global seed once.

`keras.utils.set_random_seed` also sets TensorFlow's global seed, and TensorFlow clears its
kernel caches whenever that is set: a model a sweep keeps for its next child
(train/model/pool.py) would then rebuild its traced functions' kernels, 3 s at 96 px on 2
cores, a pruned child's epoch and a half. Every random op a run makes takes its seed
explicitly (the tf.data shuffle is given the run's seed; weights, dropout and augmentation
draw from Keras seed generators seeded through Python's `random`), so TensorFlow's global
seed only has to be fixed, not changed per run: it is set to TENSORFLOW_SEED when it is not
that already. It is read, not remembered: anything else in the process (a notebook's
`keras.utils.set_random_seed`, a test) may have set it since, and the seeded shuffle's order
follows it (the same seed gave another batch order, so a sweep child's curve differed from
the same configuration run alone).
"""

from __future__ import annotations

import random

import numpy as np

TENSORFLOW_SEED = 0


def seed_run(seed: int) -> None:
    import tensorflow as tf

    # get_seed(op_seed) returns (the global seed, op_seed); given an op seed it leaves TensorFlow's
    # op-seed counter alone. With no global seed it returns TensorFlow's default graph seed.
    if tf.compat.v1.random.get_seed(1)[0] != TENSORFLOW_SEED:
        tf.random.set_seed(TENSORFLOW_SEED)
    random.seed(seed)  # Keras' initializers and seed generators draw their seeds from here
    np.random.seed(seed)
