"""The scan memory: per folder, what each file (by path, size and mtime) turned out to be.

Kept in the lrlab cache (`scans/`), so a second scan of a folder only lists and stats its
files and opens just the ones added or changed. It is a convenience: a memory that cannot
be read, or holds anything but what `save` writes, is rebuilt by the scan (the files are
opened again); one that cannot be written is skipped with a note, so a read-only or
unusable cache folder never stops a run (with `cache=none` nothing else needs it). `save`
writes exactly the files of this scan: files that are gone are forgotten.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from train.config import cache_root

SCAN_VERSION = 2  # bump when what inspection decides changes, so remembered scans are redone (2: no converted copies)


def memory_folder() -> Path:
    return cache_root() / "scans"


class ScanMemory:
    def __init__(self, folder: Path):
        key = hashlib.sha1(f"{SCAN_VERSION}|{folder.resolve()}".encode()).hexdigest()[:20]
        self.path = memory_folder() / f"{key}.json"
        self.entries: dict[str, list] = self._load()
        self.changed = False

    def _load(self) -> dict[str, list]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, unreadable or half a file: rebuilt by this scan
            return {}
        if not isinstance(entries, dict):  # a list, a number, null: not what save writes
            return {}
        return {path: entry for path, entry in entries.items() if _well_formed(entry)}

    @staticmethod
    def _stamp(path: str) -> list[int] | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return [stat.st_size, stat.st_mtime_ns]

    def recall(self, path: str) -> tuple[bool, str] | None:
        entry = self.entries.get(path)
        if entry is None or entry[0] != self._stamp(path):
            return None
        return entry[1], entry[2]

    def learn(self, path: str, outcome: tuple[bool, str]) -> None:
        self.entries[path] = [self._stamp(path), *outcome]
        self.changed = True

    def save(self, paths: list[str]) -> None:
        """Write the entries of `paths` and nothing else; atomic, so readers never see half a file."""
        kept = {path: self.entries[path] for path in paths if path in self.entries}
        if not self.changed and len(kept) == len(self.entries):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, partial = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.stem, suffix=".partial")
            try:
                with os.fdopen(handle, "w") as out:
                    json.dump(kept, out)
                os.replace(partial, self.path)
            finally:
                Path(partial).unlink(missing_ok=True)
        except OSError as error:
            print(f"note: the scan is not remembered ({self.path.parent} cannot be written: {error.strerror or error}); "
                  "the next run opens every file again", file=sys.stderr)
        self.entries, self.changed = kept, False


def _well_formed(entry) -> bool:
    """[size and mtime (or null), usable, note]: what learn() writes."""
    return (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], bool) and isinstance(entry[2], str)
            and (entry[0] is None or (isinstance(entry[0], list) and len(entry[0]) == 2)))
