"""`python -m train.data.cache`: list or clear what lrlab keeps in its cache folder.

Three kinds of things: prepared images (`prepared/`, by far the largest), scan memories
(`scans/`, one small file per folder scanned) and `converted/` (8-bit copies of odd
images that earlier versions wrote; nothing writes there now). Clearing takes each
entry's lock first and leaves an entry that a live process is writing alone; a partial
entry whose writer died is removed with the rest.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import click

from train.config import cache_root
from train.data.entry import META_FILE, PARTIAL, partial_key, prepared_root, size_text, try_lock
from train.data.scan_memory import memory_folder

_ALL = "*"


def entries() -> list[dict]:
    """Every entry folder, complete or not: key, source, image size, images, bytes on disk, last used, state."""
    found = []
    root = prepared_root()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        row = {"key": folder.name, "source": "", "image_size": 0, "images": 0, "bytes": size, "last_used": folder.stat().st_mtime}
        try:
            meta = json.loads((folder / META_FILE).read_text())
            row |= {"source": meta.get("source", ""), "image_size": int(meta["image_size"]), "images": int(meta["count"]),
                    "last_used": (folder / META_FILE).stat().st_mtime}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no meta yet, or not one (null, [])
            row["source"] = "(being written, or left by a writer that died)" if PARTIAL in folder.name else "(incomplete or corrupt: rebuilt on use)"
        found.append(row)
    return found


def _folder_bytes(folder: Path) -> tuple[int, int]:
    files = [f for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
    return len(files), sum(f.stat().st_size for f in files)


def clear(key: str | None = None) -> tuple[int, list[str]]:
    """Remove one entry (or all, with the scan memories and converted copies); return (bytes freed, keys left alone)."""
    freed, busy = 0, []
    root = prepared_root()
    for row in entries():
        entry_key = partial_key(row["key"]) or row["key"]
        if key is not None and entry_key != key:
            continue
        held = try_lock(root / f"{entry_key}.lock")
        if held is None:
            busy.append(row["key"])
            continue
        with held:
            shutil.rmtree(root / row["key"], ignore_errors=True)
            if (root / row["key"]).exists():
                raise OSError(f"'{root / row['key']}' could not be removed (a read-only cache?)")
            freed += row["bytes"]
            if not any(root.glob(f"{entry_key}*/")):  # nothing of this key left: its lock file goes too
                (root / f"{entry_key}.lock").unlink(missing_ok=True)
    if key is None:
        for lock_file in root.glob("*.lock") if root.is_dir() else []:
            held = try_lock(lock_file)
            if held is not None and not any(root.glob(f"{lock_file.stem}*/")):
                with held:
                    lock_file.unlink(missing_ok=True)
        for folder in (memory_folder(), cache_root() / "converted"):
            freed += _folder_bytes(folder)[1]
            shutil.rmtree(folder, ignore_errors=True)
    return freed, busy


@click.command(name="python -m train.data.cache", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--clear", "clear_key", is_flag=False, flag_value=_ALL, default=None, metavar="[KEY]",
              help="Remove every prepared entry, scan memory and converted copy (or only the entry KEY). Entries being written are left alone.")
def cli(clear_key: str | None) -> None:
    """List or clear lrlab's cache: prepared images, scan memories, converted copies."""
    if cache_root().exists() and not cache_root().is_dir():
        raise click.ClickException(f"the lrlab cache '{cache_root()}' is a file, not a folder; point LRLAB_CACHE at a folder")
    if clear_key is not None:
        _clear(None if clear_key == _ALL else clear_key)
        return
    rows = entries()
    print(f"{prepared_root()}: {len(rows)} entries, {size_text(sum(row['bytes'] for row in rows))}")
    for row in rows:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["last_used"]))
        print(f"  {row['key']}  {row['images']:>8} images at {row['image_size']:>4} px  {size_text(row['bytes']):>9}  last used {used}  {row['source']}")
    memories, memory_bytes = _folder_bytes(memory_folder())
    print(f"{memory_folder()}: {memories} scan memories, {size_text(memory_bytes)}")
    converted, converted_bytes = _folder_bytes(cache_root() / "converted")
    if converted:
        print(f"{cache_root() / 'converted'}: {converted} converted images from earlier versions, {size_text(converted_bytes)} (unused; --clear removes them)")


def _clear(key: str | None) -> None:
    if key is not None and key not in {partial_key(row["key"]) or row["key"] for row in entries()}:
        raise click.ClickException(f"no cache entry '{key}' in {prepared_root()}; `python -m train.data.cache` lists them")
    try:
        freed, busy = clear(key)
    except OSError as error:
        raise click.ClickException(f"cannot clear {cache_root()}: {error.strerror or error}") from None
    print(f"removed {size_text(freed)} from {cache_root()}")
    for name in busy:
        print(f"  left alone: {name} (a live process is writing it)")


def main(argv: list[str] | None = None) -> int:
    """Run the command; one `error: ...` line and exit code 2 for anything the user can fix."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.ClickException as error:
        print(f"error: {error.format_message()}", file=sys.stderr)
        return 2
    except click.exceptions.Abort:
        return 130
    return 0
