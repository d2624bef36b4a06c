"""Fixtures of the data tests: a private cache folder, small image folders, a read-only folder.

A folder that one subprocess cannot write, as a read-only shared cache is: as root, permissions do not stop writes (and chmod a-w cannot make a folder read-only), so the
subprocess gets a private mount namespace in which the folder is bind-mounted read-only: every
write there fails with EROFS, as on a read-only NFS export, and nothing changes for anyone else.
Without root, chmod -R a-w does the same for the subprocess.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(name="cache_dir")
def cache_dir_fixture(tmp_path, monkeypatch) -> Path:
    """LRLAB_CACHE in tmp_path: prepared images, scan memories and the demo of this test alone."""
    monkeypatch.setenv("LRLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def random_images(folder: Path, count: int, seed: int, size: int = 24) -> None:
    """`count` small random PNGs named `{seed}_{i}.png` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{seed}_{i}.png")


_REMOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def read_only_prefix(folder: Path) -> list[str]:
    """A command prefix that runs the command with `folder` read-only (see above)."""
    if os.geteuid() == 0:
        return ["unshare", "--mount", "sh", "-c", _REMOUNT, str(folder)]
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return []


@pytest.fixture(name="read_only_folder")
def read_only_folder_fixture():
    made: list[Path] = []

    def prefix(folder: Path) -> list[str]:
        made.append(folder)
        return read_only_prefix(folder)

    yield prefix
    for folder in made:  # writable again, so pytest can remove tmp_path
        for path in [folder, *folder.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
