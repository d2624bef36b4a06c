"""One prepared-image entry on disk: writing it under its lock, verifying it, cleaning up after writers.

`prepared/KEY/` holds `images.u8` (uint8 rows, no header) and `meta.json`, written last.
A writer holds `prepared/KEY.lock` (flock) from start to rename and writes into
`prepared/KEY.partial-PID/`; the lock is what tells a live writer from a dead one on any
machine that shares the folder, never the process id. So a partial whose lock is free was
left by a writer that died (killed, out of memory): the next open removes it, as a failed
write removes its own; `--clear` removes an entry only while holding its lock, so an entry
being written is left alone.

The data file's blocks are reserved up front (posix_fallocate): a disk that fills up
fails there, as one line, instead of a SIGBUS halfway through writing the mapped file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from train.config import ConfigError, cache_root
from train.data.images import DECODER_VERSION, image_bytes

DATA_FILE = "images.u8"
META_FILE = "meta.json"
PARTIAL = ".partial-"  # KEY.partial-PID: an entry being written, or left by a writer that died
_SAMPLED_ROWS = 16  # rows checksummed to detect a corrupt entry without reading all of it
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def prepared_root() -> Path:
    return cache_root() / "prepared"


def writable_root() -> Path:
    """prepared_root(), created; one line naming the folder and what to do when it cannot be."""
    root = prepared_root()
    if cache_root().exists() and not cache_root().is_dir():
        raise ConfigError(f"the lrlab cache '{cache_root()}' is a file, not a folder; point LRLAB_CACHE at a folder, or use -P cache=none")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"the image cache folder '{root}' cannot be written ({error.strerror or error}); "
                          "point LRLAB_CACHE at a writable folder, or use -P cache=none") from None
    return root


def write_entry(folder: Path, paths: list[str], image_size: int, source: str, decode_rows: Callable) -> int:
    """Write the entry at `folder` unless another process did meanwhile; return images decoded.

    `decode_rows(rows)` fills the (n, size, size, 3) uint8 array `rows`, or raises (nothing is kept).
    """
    root = writable_root()
    with lock(folder.with_suffix(".lock"), folder.name):
        if verified_meta(folder) is not None:
            return 0  # another process prepared it while this one waited
        for dead in root.glob(f"{folder.name}{PARTIAL}*"):  # this key's lock is ours: its writers are gone
            shutil.rmtree(dead, ignore_errors=True)
        remove_dead_partials(root)
        nbytes = len(paths) * image_bytes(image_size)
        check_disk_space(root, nbytes)
        partial = folder.with_name(f"{folder.name}{PARTIAL}{os.getpid()}")
        try:
            _write(partial, paths, image_size, source, decode_rows, nbytes)
            shutil.rmtree(folder, ignore_errors=True)  # a corrupt entry from before
            partial.rename(folder)
        except OSError as error:
            if error.errno in _FULL:
                raise ConfigError(f"the image cache at {root} ran out of room while writing {size_text(nbytes)} ({error.strerror}); "
                                  "free space, set LRLAB_CACHE to a larger disk, or use -P cache=none") from None
            raise ConfigError(f"the image cache at {root} could not be written ({error.strerror or error}); "
                              "point LRLAB_CACHE at a writable folder, or use -P cache=none") from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)  # a failed write leaves nothing behind
    return len(paths)


def _write(partial: Path, paths: list[str], image_size: int, source: str, decode_rows: Callable, nbytes: int) -> None:
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with open(partial / DATA_FILE, "wb") as handle:
        if nbytes:
            os.posix_fallocate(handle.fileno(), 0, nbytes)
    if nbytes:
        # No header: row i starts at i * row bytes, so reading a row is one pread.
        rows = np.memmap(partial / DATA_FILE, mode="r+", dtype=np.uint8, shape=(len(paths), image_size, image_size, 3))
        decode_rows(rows)
        rows.flush()
        del rows
    meta = {"version": DECODER_VERSION, "image_size": image_size, "count": len(paths), "nbytes": nbytes,
            "source": source, "created": time.time(), "checksums": checksums(partial / DATA_FILE, len(paths), image_size),
            "paths": paths}
    (partial / META_FILE).write_text(json.dumps(meta))


def checksums(data: Path, count: int, image_size: int) -> dict[str, str]:
    row_bytes = image_bytes(image_size)
    sampled = sorted({int(i) for i in np.linspace(0, count - 1, min(count, _SAMPLED_ROWS))}) if count else []
    sums = {}
    with open(data, "rb") as handle:
        for row in sampled:
            handle.seek(row * row_bytes)
            sums[str(row)] = hashlib.blake2b(handle.read(row_bytes), digest_size=16).hexdigest()
    return sums


def verified_meta(folder: Path) -> dict | None:
    """The entry's meta when the entry is complete and intact, else None (partial, truncated, corrupt, or not a meta at all)."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        if not isinstance(meta, dict) or meta.get("version") != DECODER_VERSION:
            return None
        if (folder / DATA_FILE).stat().st_size != meta["nbytes"]:
            return None
        if checksums(folder / DATA_FILE, meta["count"], meta["image_size"]) != meta["checksums"]:
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def lock(path: Path, key: str):
    """Hold the entry's lock. Re-opened when `--clear` unlinked the file meanwhile, so two holders never exist."""
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another process that is preparing the same images (cache entry {key})", file=sys.stderr, flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
            if _same_file(handle, path):
                break
        except BaseException:
            handle.close()
            raise
        handle.close()
    try:
        yield
    finally:
        handle.close()  # releases the flock


def try_lock(path: Path):
    """The entry's lock taken without waiting (an open file; close it to release), or None when a live process holds it."""
    try:
        handle = open(path, "a+")  # noqa: SIM115 - returned to the caller
    except OSError:
        handle = open(path) if path.exists() else None  # noqa: SIM115 - a read-only cache: flock works on it too
        if handle is None:
            return contextlib.nullcontext()  # no lock file: nobody can hold it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    if not _same_file(handle, path):
        handle.close()
        return None
    return handle


def _same_file(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def partial_key(name: str) -> str | None:
    return name.split(PARTIAL, 1)[0] if PARTIAL in name else None


def remove_dead_partials(root: Path) -> list[str]:
    """Remove partial entries whose writer is gone (their lock is free); return their names."""
    removed = []
    with contextlib.suppress(OSError):
        for partial in sorted(root.glob(f"*{PARTIAL}*")):
            held = try_lock(root / f"{partial_key(partial.name)}.lock")
            if held is None:
                continue  # a live writer
            with held:
                shutil.rmtree(partial, ignore_errors=True)
                removed.append(partial.name)
    return removed


def check_disk_space(folder: Path, nbytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < nbytes * 1.05 + (256 << 20):
        raise ConfigError(f"the image cache at {folder} needs {size_text(nbytes)} but the disk has {size_text(free)} free; "
                          "set LRLAB_CACHE to a larger disk, clear old entries with `python -m train.data.cache --clear`, or use -P cache=none")


def size_text(nbytes: float) -> str:
    """1.5 GB, 300.0 KB, 12 B."""
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"

