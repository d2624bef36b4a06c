"""One image decoder for training, preparation and evaluation: file -> uint8 RGB at the training size.

Pillow, not TensorFlow, so the same pixels come out whether an image is decoded while a
folder is prepared (in threads, before TensorFlow loads), every epoch (`cache=none`) or
by `evaluate`. JPEGs much larger than the training size are decoded at reduced scale
(libjpeg's DCT scaling via `Image.draft`: 1/2, 1/4 or 1/8, never below the target size)
and then resized; a 512x384 photo going to 224 px decodes at 1/2 scale, about twice as
fast, within about one grey level of a full decode (bench/bench_data_scale.py measures both).
Odd images (16-bit, CMYK, palette, transparency) are converted to 8-bit RGB here, by `to_rgb`,
so no converted copy is kept anywhere.
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
        rgb = to_rgb(image)
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), RESIZE_FILTER)
    return np.asarray(rgb, dtype=np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit gray scaled (not clipped) to 0-255, transparency dropped, CMYK/palette/gray converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def decode_into(out: np.ndarray, paths: list[str], image_size: int) -> np.ndarray:
    """Decode `paths` into the rows of `out` (n, size, size, 3) uint8; returns `out`."""
    for row, path in enumerate(paths):
        out[row] = decode_file(path, image_size)
    return out


def image_bytes(image_size: int) -> int:
    """Bytes one decoded image takes (uint8 RGB)."""
    return image_size * image_size * 3
