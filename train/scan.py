"""Scan an image folder before training: what will train, what is skipped and why.

Keras' own loader finds a corrupt JPEG only when it decodes it, mid-epoch, after batches
have trained. Here every file is opened once up front (in threads; Pillow releases the
GIL while decoding), unreadable files are skipped with their reason, and images that
TensorFlow's decoders would get wrong (CMYK, 16-bit, TIFF, WebP, ...) are converted to
8-bit RGB PNGs in a cache folder. The result is the data report logged with every run.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from train.config import ConfigError, cache_root

# Formats and modes tf.io.decode_image turns into correct 8-bit RGB by itself.
_NATIVE = {
    "JPEG": {"L", "RGB"},
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA"},
    "BMP": {"L", "P", "RGB"},
    "GIF": {"L", "P", "RGB"},
}
_PNG_BIT_DEPTH_OFFSET = 24  # byte of the IHDR chunk that holds the bit depth


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class DataReport:
    """The images a run trains and validates on, and every file left out."""

    source: str
    layout: str  # "split" (val_split of one folder) or "train_val" (train/ and val/ folders)
    class_names: list[str]
    train: list[tuple[str, int]] = field(default_factory=list)
    val: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        train = Counter(label for _, label in self.train)
        val = Counter(label for _, label in self.val)
        return {name: {"train": train[i], "val": val[i]} for i, name in enumerate(self.class_names)}

    def to_json(self) -> str:
        summary = {
            "source": self.source,
            "layout": self.layout,
            "class_names": self.class_names,
            "images": {"train": len(self.train), "val": len(self.val)},
            "per_class": self.counts(),
            "skipped": [asdict(s) for s in self.skipped],
            "converted": self.converted,
        }
        return json.dumps(summary, indent=2)

    def summary(self) -> str:
        lines = [f"data: {self.source} ({len(self.train)} train, {len(self.val)} validation images, {len(self.class_names)} classes)"]
        width = max(len(name) for name in self.class_names)
        lines += [f"  {name:<{width}}  train {c['train']:>6}  val {c['val']:>6}" for name, c in self.counts().items()]
        if self.converted:
            lines.append(f"  converted to 8-bit RGB: {len(self.converted)} images (grayscale/CMYK/16-bit/other formats)")
        if self.skipped:
            lines.append(f"  skipped: {len(self.skipped)} files")
            lines += [f"    {s.path}: {s.reason}" for s in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"    ... and {len(self.skipped) - 20} more (see data_report.json)")
        return "\n".join(lines)


def scan(folder: Path, val_split: float, seed: int, image_size: int) -> DataReport:
    """Scan `folder` and split it; raise ConfigError when there is nothing sensible to train on."""
    folder = folder.expanduser()
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        class_names = _class_names(folder / "train")
        report = DataReport(str(folder), "train_val", class_names)
        report.train = _scan_classes(folder / "train", class_names, report, image_size)
        report.val = _scan_classes(folder / "val", class_names, report, image_size)
    else:
        class_names = _class_names(folder)
        report = DataReport(str(folder), "split", class_names)
        images = _scan_classes(folder, class_names, report, image_size)
        report.train, report.val = _split(images, len(class_names), val_split, seed)
    _check_usable(report, folder)
    return report


def _class_names(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        found = f"only '{names[0]}'" if names else "none"
        raise ConfigError(f"data folder '{folder}' needs at least 2 class sub-folders (found {found}); put each class's images in a sub-folder named after it")
    return names


def _scan_classes(folder: Path, class_names: list[str], report: DataReport, image_size: int) -> list[tuple[str, int]]:
    candidates = []
    for label, name in enumerate(class_names):
        class_folder = folder / name
        if not class_folder.is_dir():
            raise ConfigError(f"class folder '{class_folder}' is missing; train/ and val/ need the same class sub-folders")
        candidates += [(p, label) for p in sorted(class_folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda item: _inspect(item[0], image_size), candidates))
    images = []
    for (path, label), (usable, reason) in zip(candidates, outcomes, strict=True):
        if usable is None:
            report.skipped.append(Skipped(str(path), reason))
            continue
        if usable != str(path):
            report.converted.append(str(path))
        images.append((usable, label))
    return images


def _inspect(path: Path, image_size: int) -> tuple[str | None, str]:
    """Return (path to train on, "") or (None, why it is skipped)."""
    if path.stat().st_size == 0:
        return None, "empty file (0 bytes)"
    try:
        with Image.open(path) as image:
            image_format, mode = image.format, image.mode
            if image_format == "JPEG":
                image.draft("RGB", (image_size, image_size))  # decode at reduced scale: fast, still reads every byte
            image.load()
    except UnidentifiedImageError:
        return None, "not an image (or a format Pillow cannot read)"
    except (OSError, SyntaxError, ValueError) as error:
        return None, f"unreadable {image_format if 'image_format' in locals() else 'image'}: {error}"
    if mode in _NATIVE.get(image_format, set()) and not _is_16_bit_png(path, image_format):
        return str(path), ""
    try:
        return _convert(path), ""
    except (OSError, ValueError) as error:
        return None, f"cannot convert {image_format} {mode} to RGB: {error}"


def _is_16_bit_png(path: Path, image_format: str) -> bool:
    if image_format != "PNG":
        return False
    with open(path, "rb") as handle:
        header = handle.read(_PNG_BIT_DEPTH_OFFSET + 1)
    return len(header) > _PNG_BIT_DEPTH_OFFSET and header[_PNG_BIT_DEPTH_OFFSET] == 16


def _convert(path: Path) -> str:
    """Write an 8-bit RGB PNG copy in the cache (keyed by path, size and mtime) and return its path."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_root() / "converted" / f"{key}.png"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            rgb = _to_rgb(image)
        partial = target.with_suffix(".partial.png")
        rgb.save(partial)
        partial.replace(target)
    return str(target)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale 0..65535 down to 0..255 rather than clipping.
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def _split(images, num_classes: int, val_split: float, seed: int):
    """Per class, a seeded shuffle, then the first val_split of it (at least one image) for validation."""
    train, val = [], []
    for label in range(num_classes):
        members = [item for item in images if item[1] == label]
        random.Random(seed + label).shuffle(members)
        n_val = max(1, round(len(members) * val_split)) if len(members) > 1 else 0
        val += members[:n_val]
        train += members[n_val:]
    return train, val


def _check_usable(report: DataReport, folder: Path) -> None:
    if not report.train and not report.val:
        raise ConfigError(f"data folder '{folder}' holds no readable images ({len(report.skipped)} files skipped); see the data report")
    for name, count in report.counts().items():
        if count["train"] == 0:
            raise ConfigError(f"class '{name}' in '{folder}' has no training images; add images or remove the folder")
    if not report.val:
        raise ConfigError(f"the validation split of '{folder}' is empty; raise val_split or add a val/ folder")
