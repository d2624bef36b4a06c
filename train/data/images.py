"""One image decoder for training, preparation and evaluation: file -> uint8 RGB at the training size.

Pillow, not TensorFlow, so the same pixels come out whether an image is decoded while a
folder is prepared (in threads, before TensorFlow loads), every epoch (`cache=none`) or
by `evaluate`. JPEGs much larger than the training size are decoded at reduced scale
(libjpeg's DCT scaling via `Image.draft`: 1/2, 1/4 or 1/8, never below the target size)
and then resized; a 512x384 photo going to 224 px decodes at 1/2 scale, about twice as
fast, within about one grey level of a full decode (bench/bench_data_scale.py measures both).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Bump when the decoded pixels change (decoder, resize filter), so prepared caches are rebuilt.
DECODER_VERSION = 1
RESIZE_FILTER = Image.Resampling.BILINEAR  # antialiased when shrinking, unlike tf.image.resize's default


def decode_file(path: str, image_size: int, reduced_scale: bool = True) -> np.ndarray:
    """The image at `path` as a (image_size, image_size, 3) uint8 array (squashed to a square, as Keras' loader does)."""
    with Image.open(path) as image:
        if reduced_scale and image.format == "JPEG":
            image.draft("RGB", (image_size, image_size))
        rgb = image.convert("RGB")
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), RESIZE_FILTER)
    return np.asarray(rgb, dtype=np.uint8)


def decode_into(out: np.ndarray, paths: list[str], image_size: int) -> np.ndarray:
    """Decode `paths` into the rows of `out` (n, size, size, 3) uint8; returns `out`."""
    for row, path in enumerate(paths):
        out[row] = decode_file(path, image_size)
    return out


def image_bytes(image_size: int) -> int:
    """Bytes one decoded image takes (uint8 RGB)."""
    return image_size * image_size * 3
