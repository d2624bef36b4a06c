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
others wait and then read. A partial entry (a process killed mid-way) has no meta.json;
a corrupt one fails the size or checksum test; either is rebuilt.

    python -m train.data.cache            list entries, their sizes and when they were last used
    python -m train.data.cache --clear    remove every entry (or --clear KEY for one)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from train.config import ConfigError, cache_root
from train.data.images import DECODER_VERSION, decode_file, decode_into, image_bytes
from train.data.progress import progress_bar

MEMORY_FRACTION = 0.25  # cache=auto keeps images in memory when they fit in this share of the available memory
_SAMPLED_ROWS = 16  # rows checksummed to detect a corrupt entry without reading all of it
_CHUNK = 64  # rows decoded per task while preparing
DATA_FILE = "images.u8"
META_FILE = "meta.json"


def prepared_root() -> Path:
    return cache_root() / "prepared"


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
    digest = hashlib.sha256(f"v{DECODER_VERSION}|{image_size}|".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


_open_in_process: dict[tuple[str, str], ImageSource] = {}  # the last entry opened: sweep children in one process share it


def open_images(paths: list[str], image_size: int, mode: str, source: str = "") -> ImageSource:
    """The images of `paths` at `image_size`, decoded once per machine (mode auto/memory/disk) or per epoch (none)."""
    if mode == "none":
        return ImageSource(image_size=image_size, paths=list(paths), mode="none")
    started = time.monotonic()
    paths = sorted(set(paths))
    key = entry_key(paths, image_size)
    folder = prepared_root() / key
    opened = _open_in_process.get((key, mode))
    if opened is not None and _verified_meta(folder) is not None:
        opened.decoded, opened.seconds = 0, time.monotonic() - started
        return opened
    decoded = 0
    meta = _verified_meta(folder)
    if meta is None:  # verified again only after preparing: meta.json lists every file, reading it twice costs
        decoded = _prepare(folder, paths, image_size, source)
        meta = _verified_meta(folder)
    if meta is None:
        raise ConfigError(f"prepared image cache {folder} could not be verified after preparing it; clear it with `python -m train.data.cache --clear` or set -P cache=none")
    os.utime(folder / META_FILE)  # last used, for `python -m train.data.cache`
    nbytes = len(paths) * image_bytes(image_size)
    chosen = _memory_or_disk(mode, nbytes)
    common = dict(image_size=image_size, paths=paths, mode=chosen, key=key, decoded=decoded)
    if chosen == "memory":
        array = np.fromfile(folder / DATA_FILE, dtype=np.uint8).reshape(len(paths), image_size, image_size, 3)
        images = InMemoryImages(array, **common)
    else:
        images = OnDiskImages(folder / DATA_FILE, **common)
    images.seconds = time.monotonic() - started
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


def _prepare(folder: Path, paths: list[str], image_size: int, source: str) -> int:
    """Decode `paths` into a new entry at `folder` unless another process did it meanwhile; return images decoded."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _lock(folder.with_suffix(".lock"), folder.name):
        if _verified_meta(folder) is not None:
            return 0  # another process prepared it while this one waited
        nbytes = len(paths) * image_bytes(image_size)
        _check_disk_space(folder.parent, nbytes)
        partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        # No header: row i starts at i * row bytes, so reading a row is one pread.
        rows = np.memmap(partial / DATA_FILE, mode="w+", dtype=np.uint8, shape=(len(paths), image_size, image_size, 3))
        _decode_all(rows, paths, image_size, source)
        rows.flush()
        del rows
        meta = {"version": DECODER_VERSION, "image_size": image_size, "count": len(paths), "nbytes": nbytes,
                "source": source, "created": time.time(), "checksums": _checksums(partial / DATA_FILE, len(paths), image_size),
                "paths": paths}
        (partial / META_FILE).write_text(json.dumps(meta))
        shutil.rmtree(folder, ignore_errors=True)  # a partial or corrupt entry from before
        partial.rename(folder)
    return len(paths)


def _decode_all(rows: np.ndarray, paths: list[str], image_size: int, source: str) -> None:
    chunks = [range(start, min(start + _CHUNK, len(paths))) for start in range(0, len(paths), _CHUNK)]

    def decode_chunk(chunk: range) -> int:
        for row in chunk:
            try:
                rows[row] = decode_file(paths[row], image_size)
            except (OSError, ValueError) as error:
                raise ConfigError(f"image '{paths[row]}' changed or became unreadable since the scan ({error}); run again") from None
        return len(chunk)

    with progress_bar(total=len(paths), desc=f"preparing {source or 'images'} at {image_size} px", unit="img") as bar:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # Pillow releases the GIL while decoding
            for done in pool.map(decode_chunk, chunks):
                bar.update(done)


def _checksums(data: Path, count: int, image_size: int) -> dict[str, str]:
    row_bytes = image_bytes(image_size)
    sampled = sorted({int(i) for i in np.linspace(0, count - 1, min(count, _SAMPLED_ROWS))})
    sums = {}
    with open(data, "rb") as handle:
        for row in sampled:
            handle.seek(row * row_bytes)
            sums[str(row)] = hashlib.blake2b(handle.read(row_bytes), digest_size=16).hexdigest()
    return sums


def _verified_meta(folder: Path) -> dict | None:
    """The entry's meta when the entry is complete and intact, else None (partial, truncated or corrupt)."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        data = folder / DATA_FILE
        if meta.get("version") != DECODER_VERSION or data.stat().st_size != meta["nbytes"]:
            return None
        if _checksums(data, meta["count"], meta["image_size"]) != meta["checksums"]:
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _lock(path: Path, key: str):
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is preparing the same images (cache entry {key})", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_disk_space(folder: Path, nbytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < nbytes * 1.05 + (256 << 20):
        raise ConfigError(f"the image cache at {folder} needs {_size(nbytes)} but the disk has {_size(free)} free; "
                          "set LRLAB_CACHE to a larger disk, clear old entries with `python -m train.data.cache --clear`, or use -P cache=none")


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"


def entries() -> list[dict]:
    """Every complete entry: key, source, image size, images, bytes on disk, last used (seconds since the epoch)."""
    found = []
    root = prepared_root()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        try:
            meta = json.loads((folder / META_FILE).read_text())
            row = {"key": folder.name, "source": meta.get("source", ""), "image_size": meta["image_size"], "images": meta["count"],
                   "bytes": size, "last_used": (folder / META_FILE).stat().st_mtime}
        except (OSError, ValueError, KeyError):
            row = {"key": folder.name, "source": "(partial or corrupt)", "image_size": 0, "images": 0, "bytes": size, "last_used": folder.stat().st_mtime}
        found.append(row)
    return found


def clear(key: str | None = None) -> int:
    """Remove one entry (or all, with their lock files); return bytes freed."""
    freed = 0
    for row in entries():
        if key is None or row["key"] == key:
            shutil.rmtree(prepared_root() / row["key"], ignore_errors=True)
            (prepared_root() / f"{row['key']}.lock").unlink(missing_ok=True)
            freed += row["bytes"]
    return freed


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m train.data.cache", description="List or clear lrlab's prepared-image cache.")
    parser.add_argument("--clear", nargs="?", const="*", metavar="KEY", help="remove every entry, or only KEY")
    args = parser.parse_args(argv)
    if args.clear:
        key = None if args.clear == "*" else args.clear
        if key is not None and key not in {row["key"] for row in entries()}:
            print(f"error: no cache entry '{key}' in {prepared_root()}; `python -m train.data.cache` lists them", file=sys.stderr)
            return 2
        print(f"removed {_size(clear(key))} from {prepared_root()}")
        return 0
    rows = entries()
    print(f"{prepared_root()}: {len(rows)} entries, {_size(sum(row['bytes'] for row in rows))}")
    for row in rows:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["last_used"]))
        print(f"  {row['key']}  {row['images']:>8} images at {row['image_size']:>4} px  {_size(row['bytes']):>9}  last used {used}  {row['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
