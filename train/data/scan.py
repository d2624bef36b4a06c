"""Scan an image folder before training: what will train, what is skipped and why.

Keras' own loader finds a corrupt JPEG only when it decodes it, mid-epoch, after batches
have trained. Here every file is opened once up front (in threads; Pillow releases the
GIL while decoding; train/data/inspect.py), unreadable files are skipped with their
reason, and odd images (CMYK, 16-bit, TIFF, WebP, ...) are reported as converted. Files
are listed without leaving the data folder through a link, each real file once, so no
image lands in two splits (train/data/walk.py). The result is the data report logged
with every run.

Scan once: what each file turned out to be is remembered per folder, by path, size and
modification time (`~/.cache/lrlab/scans/`, train/data/scan_memory.py), so a second scan
only lists and stats the files and opens just the ones that were added or changed.

Layouts: a folder of class sub-folders (split by `val_split`), or `train/` beside one of
`val/`, `validation/` or `test/` (that one validates), or `train/` alone (split). Anything
that could be read two ways is an error naming both readings. A folder with `train/`,
`val/` (or `validation/`) and `test/` holds `test/` out: the scan only lists and counts it
(it never opens a test image), and `held_out_test_split` hands it to the evaluation.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from train.config import ConfigError
from train.data.inspect import CONVERTED, inspect_file
from train.data.progress import progress_bar
from train.data.scan_memory import ScanMemory
from train.data.walk import list_files

VALIDATION_FOLDERS = ("val", "validation", "test")  # beside train/, the held-out split, in order of preference
TEST_FOLDER = "test"  # held out of training and selection when a val/ or validation/ folder validates


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
        images = _scan_splits(folder, {"train": train_folder}, class_names, report, image_size)["train"]
        report.train, report.val = _split(images, len(class_names), val_split, seed)
    else:
        _check_same_classes(train_folder, val_folder, class_names)
        report = DataReport(str(folder), "train_val", class_names)
        splits = {"train": train_folder, "val": val_folder}
        test_folder = held_out_test_folder(folder)
        if test_folder is not None:
            _check_same_classes(train_folder, test_folder, class_names)
            splits["test"] = test_folder
        found = _scan_splits(folder, splits, class_names, report, image_size, listed_only={"test"})
        report.train, report.val = found["train"], found["val"]
        if test_folder is not None:
            report.test_folder = str(test_folder)
            per_label = Counter(label for _, label in found["test"])
            report.test_files = {name: per_label[i] for i, name in enumerate(class_names)}
    check_usable(report, folder)
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
    train_folder, val_folder = split_folders(folder)
    class_names = class_folders(train_folder)
    _check_same_classes(train_folder, test_folder, class_names)
    report = DataReport(str(test_folder), "test", class_names)
    # Listed beside train/ and val/, so a test file that is also theirs (a link) counts as theirs, not as a test image.
    splits = {"train": train_folder, "val": val_folder, "test": test_folder}
    found = _scan_splits(folder, splits, class_names, report, image_size, listed_only={"train", "val"})["test"]
    if not found:
        raise ConfigError(f"test split '{test_folder}' holds no readable images ({len(report.skipped)} files skipped); add images or remove test/")
    return HeldOutTest(str(test_folder), class_names, [path for path, _ in found], [label for _, label in found],
                       [s for s in report.skipped if s.path.startswith(str(test_folder))])


def _data_folder(data: str | Path) -> Path:
    if str(data) == "demo":
        from train.data.demo import demo_folder

        return demo_folder()
    return Path(data).expanduser()


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
    """The readable images of `folder`'s class sub-folders (labels index `class_names`); the rest go to report.skipped."""
    return _scan_splits(folder, {"all": folder}, class_names, report, image_size)["all"]


def _scan_splits(root: Path, splits: dict[str, Path], class_names: list[str], report: DataReport, image_size: int,
                 listed_only: frozenset[str] | set[str] = frozenset()) -> dict[str, list[tuple[str, int]]]:
    """Per split, (path, label) of its images: listed together (one real file, one split), then opened, except
    the splits in `listed_only`, whose files are returned unopened (the held-out test/, while training)."""
    folders = []
    for split, folder in splits.items():
        for label, name in enumerate(class_names):
            class_folder = folder / name
            if class_folder.is_dir():
                folders.append((str(class_folder), split, label))
            elif split in ("train", "val", "all"):
                raise ConfigError(f"class folder '{class_folder}' is missing; train/ and val/ need the same class sub-folders")
    listing = list_files(str(root), folders)
    report.skipped += [Skipped(path, reason) for path, reason in listing.skipped]
    found = {}
    for split, folder in splits.items():
        candidates = [(path, label) for label in range(len(class_names)) for path in listing.files.get((split, label), [])]
        if split in listed_only:
            found[split] = candidates
            continue
        outcomes = _inspect_all(folder, [path for path, _ in candidates], image_size, report)
        found[split] = []
        for (path, label), (usable, note) in zip(candidates, outcomes, strict=True):
            if not usable:
                report.skipped.append(Skipped(path, note))
                continue
            if note == CONVERTED:
                report.converted.append(path)
            found[split].append((path, label))
    return found


def _inspect_all(folder: Path, paths: list[str], image_size: int, report: DataReport) -> list[tuple[bool, str]]:
    """What each file is: remembered from an earlier scan when its size and mtime are unchanged, else opened."""
    memory = ScanMemory(folder)
    outcomes: list[tuple[bool, str] | None] = [memory.recall(path) for path in paths]
    unknown = [index for index, known in enumerate(outcomes) if known is None]
    with progress_bar(total=len(unknown), desc=f"scanning {folder}", unit="file") as bar, ThreadPoolExecutor(max_workers=8) as pool:
        for index, outcome in zip(unknown, pool.map(lambda i: inspect_file(paths[i], image_size), unknown), strict=True):
            outcomes[index] = outcome
            memory.learn(paths[index], outcome)
            bar.update(1)
    report.inspected += len(unknown)
    memory.save(paths)
    return outcomes


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


def check_usable(report: DataReport, folder: Path) -> None:
    """One line when the report leaves nothing sensible to train on (no images, a class without, no validation)."""
    if not report.train and not report.val:
        raise ConfigError(f"data folder '{folder}' holds no readable images ({len(report.skipped)} files skipped); see the data report")
    for name, count in report.counts().items():
        if count["train"] == 0:
            class_folder = str((folder / "train" if report.layout == "train_val" else folder) / name)
            why = next((f" ({s.path}: {s.reason})" for s in report.skipped if s.path == class_folder or s.path.startswith(class_folder + "/")), "")
            raise ConfigError(f"class '{name}' in '{folder}' has no training images{why}; add images or remove the folder")
    if not report.val:
        raise ConfigError(f"the validation split of '{folder}' is empty; raise val_split or add a val/ folder")
