"""Scan an image folder before training: what will train, what is skipped and why.

Keras' own loader finds a corrupt JPEG only when it decodes it, mid-epoch, after batches
have trained. Here every file is opened once up front (in threads; Pillow releases the
GIL while decoding), unreadable files are skipped with their reason, and images that
TensorFlow's decoders would get wrong (CMYK, 16-bit, TIFF, WebP, ...) are converted to
8-bit RGB PNGs in a cache folder. The result is the data report logged with every run.

Scan once: what each file turned out to be is remembered per folder, by path, size and
modification time (`~/.cache/lrlab/scans/`), so a second scan only lists and stats the
files and opens just the ones that were added or changed.

Layouts: a folder of class sub-folders (split by `val_split`), or `train/` beside one of
`val/`, `validation/` or `test/` (that one validates), or `train/` alone (split). Anything
that could be read two ways is an error naming both readings. A folder with `train/`,
`val/` (or `validation/`) and `test/` holds `test/` out: the scan only lists and counts it
(it never opens a test image), and `held_out_test_split` hands it to the evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from train.config import ConfigError, cache_root
from train.data.progress import progress_bar

# Formats and modes tf.io.decode_image turns into correct 8-bit RGB by itself.
_NATIVE = {
    "JPEG": {"L", "RGB"},
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA"},
    "BMP": {"L", "P", "RGB"},
    "GIF": {"L", "P", "RGB"},
}
_PNG_BIT_DEPTH_OFFSET = 24  # byte of the IHDR chunk that holds the bit depth
VALIDATION_FOLDERS = ("val", "validation", "test")  # beside train/, the held-out split, in order of preference
TEST_FOLDER = "test"  # held out of training and selection when a val/ or validation/ folder validates
SCAN_VERSION = 1  # bump when what _inspect decides changes, so remembered scans are redone


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
    inspected: int = 0  # files opened by this scan (the others were known from an earlier scan)
    seconds: float = 0.0
    test_folder: str = ""  # the held-out test/ split, listed and counted but never opened ("" when there is none)
    test_files: dict[str, int] = field(default_factory=dict)  # per class, files in test/ (unread, so unchecked)

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
            "scan": {"files_opened": self.inspected, "seconds": round(self.seconds, 3)},
        }
        if self.test_folder:
            summary["test"] = {"folder": self.test_folder, "files": sum(self.test_files.values()), "per_class": self.test_files,
                               "note": "held out: never opened by training or validation; evaluated once on a stage's best run"}
        return json.dumps(summary, indent=2)

    def summary(self) -> str:
        lines = [f"data: {self.source} ({len(self.train)} train, {len(self.val)} validation images, {len(self.class_names)} classes)"]
        width = max(len(name) for name in self.class_names)
        lines += [f"  {name:<{width}}  train {c['train']:>6}  val {c['val']:>6}" for name, c in self.counts().items()]
        if self.test_folder:
            lines.append(f"  held out: {sum(self.test_files.values())} files in {self.test_folder} (never trained on or used to select)")
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
    started = time.monotonic()
    folder = folder.expanduser()
    train_folder, val_folder = split_folders(folder)
    class_names = class_folders(train_folder)
    if val_folder is None:
        report = DataReport(str(folder), "split", class_names)
        images = _scan_classes(train_folder, class_names, report, image_size)
        report.train, report.val = _split(images, len(class_names), val_split, seed)
    else:
        _check_same_classes(train_folder, val_folder, class_names)
        report = DataReport(str(folder), "train_val", class_names)
        report.train = _scan_classes(train_folder, class_names, report, image_size)
        report.val = _scan_classes(val_folder, class_names, report, image_size)
        test_folder = held_out_test_folder(folder)
        if test_folder is not None:
            report.test_folder, report.test_files = str(test_folder), _count_test_files(train_folder, test_folder, class_names)
    _check_usable(report, folder)
    report.seconds = time.monotonic() - started
    return report


def split_folders(folder: Path) -> tuple[Path, Path | None]:
    """(the folder to train on, the validation folder or None to split it) for the layouts above."""
    subfolders = {p.name for p in _subfolders(folder)}
    held_out = [name for name in VALIDATION_FOLDERS if name in subfolders]
    if "train" not in subfolders:
        if held_out:
            raise ConfigError(f"data folder '{folder}' has a '{held_out[0]}/' folder but no 'train/' beside it; "
                              f"put the training images in '{folder / 'train'}', or rename '{held_out[0]}/' if it is a class")
        return folder, None
    others = sorted(subfolders - {"train", *VALIDATION_FOLDERS})
    if others:
        raise ConfigError(f"data folder '{folder}' has 'train/' beside other folders ({', '.join(others)}): is it a split layout or are those classes? "
                          "move class folders into train/ (and val/), or train/ out")
    if "val" in held_out and "validation" in held_out:
        raise ConfigError(f"data folder '{folder}' has both 'val/' and 'validation/'; keep one as the validation split")
    return folder / "train", (folder / held_out[0]) if held_out else None


def held_out_test_folder(folder: Path) -> Path | None:
    """`folder/test` when it is held out: beside `train/` and a `val/` or `validation/` that validates; else None."""
    train_folder, val_folder = split_folders(folder)
    if val_folder is None or val_folder.name == TEST_FOLDER or not (folder / TEST_FOLDER).is_dir():
        return None
    return folder / TEST_FOLDER


@dataclass
class HeldOutTest:
    """The held-out test images of a data folder, labelled by the training classes."""

    folder: str
    class_names: list[str]  # the classes of train/, in label order (what the model's outputs mean)
    paths: list[str]
    labels: list[int]  # index into class_names, one per path
    skipped: list[Skipped] = field(default_factory=list)  # unreadable test files and why


def held_out_test_split(data: str | Path, image_size: int) -> HeldOutTest | None:
    """The test/ split of `data` (a folder, or "demo") for evaluating a run on images it never saw.

    Returns None when `data` has no held-out test split (no test/, or test/ is the validation
    split because there is no val/ or validation/). Otherwise every test file is opened once
    (as the scan opens train/ and val/; remembered per folder), unreadable ones are left out
    with their reason in `skipped`, and `labels[i]` indexes `class_names`, the sorted class
    folders of train/ (the same order the training run used). Raises ConfigError (one line)
    when test/ has a class that train/ lacks, or no readable image. Paths decode with
    `train.data.images.decode_file` (or `train.data.pipeline.decode_image`) at `image_size`.
    """
    folder = _data_folder(data)
    test_folder = held_out_test_folder(folder)
    if test_folder is None:
        return None
    train_folder = folder / "train"
    class_names = class_folders(train_folder)
    _check_same_classes(train_folder, test_folder, class_names)
    present = [name for name in class_names if (test_folder / name).is_dir()]
    report = DataReport(str(test_folder), "test", present)
    found = _scan_classes(test_folder, present, report, image_size)
    if not found:
        raise ConfigError(f"test split '{test_folder}' holds no readable images ({len(report.skipped)} files skipped); add images or remove test/")
    index = {name: i for i, name in enumerate(class_names)}
    return HeldOutTest(str(test_folder), class_names, [path for path, _ in found], [index[present[label]] for _, label in found], report.skipped)


def _data_folder(data: str | Path) -> Path:
    if str(data) == "demo":
        from train.data.demo import demo_folder

        return demo_folder()
    return Path(data).expanduser()


def _count_test_files(train_folder: Path, test_folder: Path, class_names: list[str]) -> dict[str, int]:
    """Per class, the files test/ holds: listed only, so training never opens one."""
    _check_same_classes(train_folder, test_folder, class_names)
    return {name: len(_files(test_folder / name)) if (test_folder / name).is_dir() else 0 for name in class_names}


def subfolder_names(folder: Path) -> list[str]:
    """The non-hidden sub-folders of `folder`, sorted: its classes, in a class-per-folder layout."""
    return sorted(p.name for p in _subfolders(folder))


def class_folders(folder: Path) -> list[str]:
    """The class sub-folders of `folder`, sorted; at least two."""
    names = subfolder_names(folder)
    if len(names) < 2:
        found = f"only '{names[0]}'" if names else "none"
        raise ConfigError(f"data folder '{folder}' needs at least 2 class sub-folders (found {found}); put each class's images in a sub-folder named after it")
    return names


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError as error:
        raise ConfigError(f"data folder '{folder}' cannot be read ({error.strerror}); check its permissions") from None


def _check_same_classes(train_folder: Path, val_folder: Path, class_names: list[str]) -> None:
    extra = sorted({p.name for p in _subfolders(val_folder)} - set(class_names))
    if extra:
        raise ConfigError(f"class folder{'s' if len(extra) > 1 else ''} {', '.join(extra)} in '{val_folder}' "
                          f"{'are' if len(extra) > 1 else 'is'} not in '{train_folder}'; a class needs training images: add them or remove the folder")


def _scan_classes(folder: Path, class_names: list[str], report: DataReport, image_size: int) -> list[tuple[str, int]]:
    candidates = []
    for label, name in enumerate(class_names):
        class_folder = folder / name
        if not class_folder.is_dir():
            raise ConfigError(f"class folder '{class_folder}' is missing; train/ and val/ need the same class sub-folders")
        candidates += [(path, label) for path in _files(class_folder)]
    outcomes = _inspect_all(folder, [path for path, _ in candidates], image_size, report)
    images = []
    for (path, label), (usable, reason) in zip(candidates, outcomes, strict=True):
        if usable is None:
            report.skipped.append(Skipped(path, reason))
            continue
        if usable != path:
            report.converted.append(path)
        images.append((usable, label))
    return images


def _files(folder: Path) -> list[str]:
    """Every non-hidden file below `folder`, sorted (os.walk: one listing per folder, no stat per file)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, name) for name in files if not name.startswith(".")]
    return sorted(found)


def _inspect_all(folder: Path, paths: list[str], image_size: int, report: DataReport) -> list[tuple[str | None, str]]:
    """What each file is: remembered from an earlier scan when its size and mtime are unchanged, else opened."""
    memory = _ScanMemory(folder)
    outcomes: list[tuple[str | None, str] | None] = []
    unknown = []
    for index, path in enumerate(paths):
        known = memory.recall(path)
        outcomes.append(known)
        if known is None:
            unknown.append(index)
    with progress_bar(total=len(unknown), desc=f"scanning {folder}", unit="file") as bar, ThreadPoolExecutor(max_workers=8) as pool:
        for index, outcome in zip(unknown, pool.map(lambda i: _inspect(Path(paths[i]), image_size), unknown), strict=True):
            outcomes[index] = outcome
            memory.learn(paths[index], outcome)
            bar.update(1)
    report.inspected += len(unknown)
    memory.save(paths)
    return outcomes


class _ScanMemory:
    """Per folder, what each file (by path, size and mtime) turned out to be; kept in the lrlab cache."""

    def __init__(self, folder: Path):
        key = hashlib.sha1(f"{SCAN_VERSION}|{folder.resolve()}".encode()).hexdigest()[:20]
        self.path = cache_root() / "scans" / f"{key}.json"
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    @staticmethod
    def _stamp(path: str) -> list[int] | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return [stat.st_size, stat.st_mtime_ns]

    def recall(self, path: str) -> tuple[str | None, str] | None:
        entry = self.entries.get(path)
        if entry is None or entry[0] != self._stamp(path):
            return None
        usable, reason = entry[1], entry[2]
        if usable is not None and usable != path and not os.path.exists(usable):
            return None  # its converted copy was cleared from the cache
        return usable, reason

    def learn(self, path: str, outcome: tuple[str | None, str]) -> None:
        self.entries[path] = [self._stamp(path), *outcome]
        self.changed = True

    def save(self, paths: list[str]) -> None:
        """Write the entries of `paths` (files that are gone are forgotten); atomic, so readers never see half a file."""
        kept = {path: self.entries[path] for path in paths if path in self.entries}
        if not self.changed and len(kept) == len(self.entries):
            return
        merged = {**self._on_disk(), **kept}  # another class folder of the same scan saved meanwhile
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.stem, suffix=".partial")
        with os.fdopen(handle, "w") as out:
            json.dump(merged, out)
        os.replace(partial, self.path)
        self.entries, self.changed = merged, False

    def _on_disk(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}


def _inspect(path: Path, image_size: int) -> tuple[str | None, str]:
    """Return (path to train on, "") or (None, why it is skipped)."""
    try:
        if path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
    except OSError as error:
        return None, f"cannot be read ({error.strerror or error}; a broken link or no permission?)"
    try:
        with Image.open(path) as image:  # Pillow refuses > 2x MAX_IMAGE_PIXELS itself
            if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                return None, f"too many pixels to decode safely ({image.width}x{image.height}; a decompression bomb?)"
            image_format, mode = image.format, image.mode
            if image_format == "JPEG":
                image.draft("RGB", (image_size, image_size))  # decode at reduced scale: fast, still reads every byte
            image.load()
    except UnidentifiedImageError:
        return None, "not an image (or a format Pillow cannot read)"
    except Image.DecompressionBombError as error:
        return None, f"too many pixels to decode safely (a decompression bomb?): {error}"
    except PermissionError as error:
        return None, f"cannot be read ({error.strerror}); check its permissions"
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
        # A name of its own: two runs converting the same image must not write one partial file.
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f"{key}.", suffix=".partial.png")
        os.close(handle)
        rgb.save(partial, format="PNG")
        os.replace(partial, target)  # atomic; both writers wrote the same pixels
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
    by_class = defaultdict(list)
    for item in images:
        by_class[item[1]].append(item)
    for label in range(num_classes):
        members = by_class[label]
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
