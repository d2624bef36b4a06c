"""The built-in demo data set: six classes of drawn shapes, generated once and cached.

Deterministic (fixed seed), small (420 PNGs of 96 px) and learnable from scratch in a few
CPU epochs, yet noisy enough that learning rates give visibly different curves. It is
written as an ordinary image folder with `train/` (48 a class), `val/` (12) and a held-out
`test/` (10) and read by the same loader as user data, so the demo exercises the real path,
the test split included.
"""

from __future__ import annotations

import colorsys
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from train.config import ConfigError, cache_root

CLASSES = ("circle", "square", "triangle", "cross", "ring", "stripes")
SPLITS = {"train": 48, "val": 12, "test": 10}  # images per class in each split folder
IMAGES_PER_CLASS = sum(SPLITS.values())
IMAGE_PIXELS = 96
VERSION = 3  # bump when the drawing or the layout changes, so old caches are not reused (3: train/ val/ test/)


def demo_folder() -> Path:
    """The demo folder, generated on first use."""
    folder = cache_root() / f"demo-v{VERSION}"
    if not (folder / ".complete").exists():
        try:
            _generate(folder)
        except OSError as error:
            raise ConfigError(f"the demo data set cannot be written to '{folder}' ({error.strerror or error}); "
                              "point LRLAB_CACHE at a writable folder") from None
    return folder


def _generate(folder: Path) -> None:
    # Each process writes its own partial folder: eight first runs started together must
    # not delete each other's half-written images.
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))
    rng = np.random.default_rng(1234)
    for class_name in CLASSES:
        first = 0
        for split, count in SPLITS.items():
            (partial / split / class_name).mkdir(parents=True)
            for index in range(first, first + count):
                _draw(class_name, rng).save(partial / split / class_name / f"{class_name}_{index:03d}.png")
            first += count
    (partial / ".complete").touch()
    os.chmod(partial, 0o755)  # mkdtemp makes it private
    try:
        partial.rename(folder)  # atomic: concurrent first runs never see half a data set
    except OSError:  # another process renamed its copy first; the images are the same
        shutil.rmtree(partial, ignore_errors=True)


def _draw(class_name: str, rng: np.random.Generator) -> Image.Image:
    size = IMAGE_PIXELS
    background = rng.integers(0, 110, 3)  # dark, so every shape stands out
    noise = rng.normal(0, 24, (size, size, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    # Each class leans to its own hue (with jitter that overlaps its neighbours), so a
    # small network learns in a few epochs and learning rates still separate visibly.
    hue = (CLASSES.index(class_name) / len(CLASSES) + rng.normal(0, 0.07)) % 1.0
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.75, 1.0)))
    radius = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    width = max(2, int(radius / 3))
    if class_name == "circle":
        draw.ellipse(box, fill=colour)
    elif class_name == "square":
        draw.rectangle(box, fill=colour)
    elif class_name == "triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour)
    elif class_name == "cross":
        draw.line((cx - radius, cy, cx + radius, cy), fill=colour, width=width)
        draw.line((cx, cy - radius, cx, cy + radius), fill=colour, width=width)
    elif class_name == "ring":
        draw.ellipse(box, outline=colour, width=width)
    else:
        for offset in range(-3, 4, 2):
            y = cy + offset * radius / 4
            draw.line((cx - radius, y, cx + radius, y), fill=colour, width=max(2, width // 2))
    return image
