"""Prepared images: a folder decoded once at a training size, reused by every later run.

An entry is one raw file of uint8 RGB rows (`images.u8`, n x size x size x 3) plus
`meta.json`, written last, that lists the files in row order and checksums of sampled
rows. Its key covers every image's path, size and modification time, the image size and
the decoder version, so any change to the folder or the settings gives a new entry, and
runs with other seeds, splits, learning rates or stages share one.

Why a raw file read with `pread` rather than tf.data's `snapshot`/`save` or `cache(file)`:
rows are addressable, so each epoch shuffles the row list (16 bytes an image) and reads
batches in that order; there is no shuffle buffer of decoded images, and memory does not
grow with the data set (`disk`). Many processes read one file through the page cache;
`memory` reads it once into the process. tf.data's own formats are sequential: a true
shuffle needs a buffer of decoded images, which is what this replaces.

Concurrent runs preparing the same entry take turns on a lock file: one decodes, the
others wait and then read. A partial entry (a process killed mid-way) is removed at the
next open, a corrupt one fails the size or checksum test and is rebuilt (train/data/entry.py).
Preparing stops at the first image that fails to decode; a file deleted since the scan is
left out with its reason (`ImageSource.vanished`) and the entry is made without it. A
complete entry in a read-only cache is used as it is.

    python -m train.data.cache            list entries, scan memories and their sizes
    python -m train.data.cache --clear    remove every entry not being written (or --clear KEY for one)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from train.config import ConfigError
from train.data.entry import DATA_FILE, META_FILE, prepared_root, remove_dead_partials, verified_meta, write_entry
from train.data.images import DECODER_VERSION, decode_file, decode_into, image_bytes
from train.data.progress import progress_bar
from train.data.scan import DataReport, Skipped, check_usable

MEMORY_FRACTION = 0.25  # cache=auto keeps images in memory when they fit in this share of the available memory
_CHUNK = 64  # rows decoded per task while preparing
_RETRIES = 3  # preparations restarted without files deleted meanwhile, before giving up
__all__ = ["DATA_FILE", "META_FILE", "ImageSource", "open_images", "open_report_images", "prepared_root"]


class ImageSource:
    """Decoded images by row: what the tf.data pipelines read batches from. This base class
    decodes the files of its rows on every call (cache=none)."""

    def __init__(self, image_size: int, paths: list[str], mode: str = "none", key: str = "", decoded: int = 0):
        self.image_size = image_size
        self.paths = paths
        self.mode = mode  # "memory", "disk" or "none"
        self.key = key
        self.decoded = decoded  # images this process decoded to prepare the entry (0: reused)
        self.seconds = 0.0  # time spent preparing (or opening) the entry
        self.vanished: list[tuple[str, str]] = []  # (path, why) of files deleted since the scan, left out
        self._index = {path: row for row, path in enumerate(paths)}

    @property
    def reused(self) -> bool:
        return self.mode != "none" and self.decoded == 0

    def rows_of(self, paths: list[str]) -> np.ndarray:
        return np.fromiter((self._index[path] for path in paths), dtype=np.int64, count=len(paths))

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Images of `rows`, as (len(rows), size, size, 3) uint8."""
        out = np.empty((len(rows), self.image_size, self.image_size, 3), dtype=np.uint8)
        return decode_into(out, [self.paths[row] for row in rows], self.image_size)


class InMemoryImages(ImageSource):
    def __init__(self, array: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.array = array

    def gather(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


class OnDiskImages(ImageSource):
    """Rows read with pread: nothing but the batch in flight lives in the process."""

    def __init__(self, data_path: Path, **kwargs):
        super().__init__(**kwargs)
        self._fd = os.open(data_path, os.O_RDONLY)
        self._row_bytes = image_bytes(self.image_size)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.image_size, self.image_size, 3), dtype=np.uint8)
        flat = out.reshape(len(rows), -1)
        for i, row in enumerate(rows):
            if os.preadv(self._fd, [flat[i]], int(row) * self._row_bytes) != self._row_bytes:
                raise OSError(f"prepared image cache {self.key} is truncated; clear it with `python -m train.data.cache --clear {self.key}`")
        return out

    def __del__(self):
        with contextlib.suppress(Exception):
            os.close(self._fd)


def entry_key(paths: list[str], image_size: int) -> str:
    """Hash of every file's path, size and mtime, the image size and the decoder version."""
    return _key_and_vanished(paths, image_size)[0]


def _key_and_vanished(paths: list[str], image_size: int) -> tuple[str, list[str]]:
    digest = hashlib.sha256(f"v{DECODER_VERSION}|{image_size}|".encode())
    vanished = []
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            vanished.append(path)
            continue
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24], vanished


_open_in_process: dict[tuple[str, str], ImageSource] = {}  # the last entry opened: sweep children in one process share it


class _Vanished(Exception):
    def __init__(self, paths: list[str]):
        super().__init__(paths)
        self.paths = paths


def open_images(paths: list[str], image_size: int, mode: str, source: str = "") -> ImageSource:
    """The images of `paths` at `image_size`, decoded once per machine (mode auto/memory/disk) or per epoch (none).

    Files deleted since the scan are left out, listed in the result's `vanished` with why.
    """
    started = time.monotonic()
    paths = sorted(set(paths))
    vanished: list[tuple[str, str]] = []
    for _ in range(_RETRIES):
        key, gone = _key_and_vanished(paths, image_size)
        vanished += [(path, "deleted since the scan") for path in gone]
        paths = _without(paths, gone)
        if mode == "none":
            images = ImageSource(image_size=image_size, paths=paths, mode="none")
            break
        try:
            images = _open_entry(paths, image_size, mode, source, key)
            break
        except _Vanished as error:
            vanished += [(path, "deleted while the images were being prepared") for path in error.paths]
            paths = _without(paths, error.paths)
    else:
        raise ConfigError(f"files of {source or 'the data folder'} keep disappearing while the images are prepared "
                          f"({len(vanished)} so far, e.g. {vanished[-1][0]}); run again once the folder is settled")
    images.vanished = vanished
    images.seconds = time.monotonic() - started
    return images


def open_report_images(report: DataReport, image_size: int, mode: str) -> ImageSource:
    """open_images for a scan's train and val images; files deleted since the scan leave the report, skipped with why."""
    images = open_images([path for path, _ in report.train + report.val], image_size, mode, source=report.source)
    if images.vanished:
        gone = {path for path, _ in images.vanished}
        report.train = [item for item in report.train if item[0] not in gone]
        report.val = [item for item in report.val if item[0] not in gone]
        report.skipped += [Skipped(path, why) for path, why in images.vanished]
        check_usable(report, Path(report.source))
    return images


def _without(paths: list[str], left_out: list[str]) -> list[str]:
    dropped = set(left_out)
    return [path for path in paths if path not in dropped]


def _open_entry(paths: list[str], image_size: int, mode: str, source: str, key: str) -> ImageSource:
    folder = prepared_root() / key
    opened = _open_in_process.get((key, mode))
    if opened is not None and verified_meta(folder) is not None:
        opened.decoded = 0
        return opened
    remove_dead_partials(prepared_root())
    decoded = 0
    meta = verified_meta(folder)
    if meta is None:  # verified again only after preparing: meta.json lists every file, reading it twice costs
        decoded = write_entry(folder, paths, image_size, source, lambda rows: _decode_all(rows, paths, image_size, source))
        meta = verified_meta(folder)
    if meta is None:
        raise ConfigError(f"prepared image cache {folder} could not be verified after preparing it; clear it with `python -m train.data.cache --clear` or set -P cache=none")
    with contextlib.suppress(OSError):  # last used, for `python -m train.data.cache`; a read-only cache is used as it is
        os.utime(folder / META_FILE)
    nbytes = len(paths) * image_bytes(image_size)
    chosen = _memory_or_disk(mode, nbytes)
    common = dict(image_size=image_size, paths=paths, mode=chosen, key=key, decoded=decoded)
    if chosen == "memory":
        array = np.fromfile(folder / DATA_FILE, dtype=np.uint8).reshape(len(paths), image_size, image_size, 3)
        images = InMemoryImages(array, **common)
    else:
        images = OnDiskImages(folder / DATA_FILE, **common)
    _open_in_process.clear()  # one entry at a time: the previous one's memory goes
    _open_in_process[(key, mode)] = images
    return images


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be used without swapping), else physical memory."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _memory_or_disk(mode: str, nbytes: int) -> str:
    if mode in ("memory", "disk"):
        return mode
    return "memory" if nbytes <= MEMORY_FRACTION * available_memory_bytes() else "disk"


def _decode_all(rows: np.ndarray, paths: list[str], image_size: int, source: str) -> None:
    """Decode every path into its row; at the first failure every thread stops at its next image."""
    chunks = [range(start, min(start + _CHUNK, len(paths))) for start in range(0, len(paths), _CHUNK)]
    stop = threading.Event()
    gone: list[str] = []

    def decode_chunk(chunk: range) -> int:
        for row in chunk:
            if stop.is_set():
                return 0
            try:
                rows[row] = decode_file(paths[row], image_size)
            except FileNotFoundError:
                gone.append(paths[row])
                stop.set()
            except Exception as error:  # noqa: BLE001 - whatever a file that changed since the scan raises, it is one line
                stop.set()
                raise ConfigError(f"image '{paths[row]}' changed since the scan and cannot be decoded ({type(error).__name__}: {error}); "
                                  "run again: the scan will skip it") from None
        return len(chunk)

    with progress_bar(total=len(paths), desc=f"preparing {source or 'images'} at {image_size} px", unit="img") as bar, \
            ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # Pillow releases the GIL while decoding
        try:
            for done in pool.map(decode_chunk, chunks):
                bar.update(done)
        except BaseException:
            stop.set()  # also on Ctrl-C: queued chunks return at once
            raise
    if gone:
        raise _Vanished(gone)


def main(argv: list[str] | None = None) -> int:
    from train.data.cache_admin import main as admin_main

    return admin_main(argv)


if __name__ == "__main__":
    sys.exit(main())
