"""tf.data input pipelines: parallel decode, cache, then shuffle, batch, augment, prefetch.

The cache sits before any random step, so decoding and resizing happen once (in the
first epoch) and every later epoch reads decoded images from memory while augmentation
stays random per epoch.
"""

from __future__ import annotations

import tensorflow as tf
from keras import layers

from train.scan import DataReport

AUTOTUNE = tf.data.AUTOTUNE


def make_datasets(report: DataReport, image_size: int, batch_size: int, seed: int, augment: bool):
    """Return (train, validation) datasets of (float32 RGB 0-255 images, int labels)."""
    augmentation = make_augmentation(seed) if augment else None
    train = _pipeline(report.train, image_size, batch_size, seed=seed, shuffle=True, augmentation=augmentation)
    val = _pipeline(report.val, image_size, batch_size, seed=seed, shuffle=False, augmentation=None)
    return train, val


def make_augmentation(seed: int):
    """Random flips, small rotations and zooms, as in the EfficientNet transfer-learning lab."""
    return tf.keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.1, seed=seed),
            layers.RandomZoom(0.1, seed=seed),
        ],
        name="augmentation",
    )


def decode_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.image.resize(image, (image_size, image_size))
    image.set_shape((image_size, image_size, 3))
    return image


def _pipeline(items, image_size: int, batch_size: int, seed: int, shuffle: bool, augmentation):
    paths = [path for path, _ in items]
    labels = [label for _, label in items]
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.map(lambda path, label: (decode_image(path, image_size), label), num_parallel_calls=AUTOTUNE)
    dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augmentation is not None:
        dataset = dataset.map(lambda images, labels: (augmentation(images, training=True), labels), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)
