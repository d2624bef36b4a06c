"""Listing the files of class folders: never out of the data folder through a link, each real file once.

`os.walk(followlinks=True)` follows a class folder linked to `/` over the whole machine, and
a loop (`x -> .`) lists the same images again and again, so copies land in both train and
validation. Here a folder link is followed only when it stays inside the data folder and
leads to a folder not listed yet; the same real file (by device and inode, so hard links
too) is listed once, under the path that is not a link where there is one. What is left out
is returned with its reason for the data report.

Links to single files may point anywhere: a folder of links into a shared image store is a
common way to build splits, and a file is one file, never a walk.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Listing:
    files: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # (split, label) -> sorted paths
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def list_files(root: str, folders: list[tuple[str, str, int]]) -> Listing:
    """Every non-hidden file below each (folder, split, label), by the rules above; `root` is the data folder."""
    walker = _Walker(os.path.realpath(root))
    for folder, split, label in folders:
        walker.start(folder, split, label)
    while walker.linked:  # folder links last, so a file reached without a link keeps its own path
        walker.walk(*walker.linked.popleft(), via_link=True)
    listing = Listing(skipped=walker.skipped)
    for _, split, label in folders:
        listing.files.setdefault((split, label), [])
    for path, (split, label, _) in walker.found.items():
        listing.files[(split, label)].append(path)
    for paths in listing.files.values():
        paths.sort()
    return listing


class _Walker:
    def __init__(self, root: str):
        self.root = root
        self.seen_folders: set[tuple[int, int]] = set()
        self.found: dict[str, tuple[str, int, bool]] = {}  # path -> (split, label, reached through a link)
        self.by_file: dict[tuple[int, int], str] = {}  # (device, inode) -> the path it is listed under
        self.linked: deque[tuple[str, str, int]] = deque()
        self.skipped: list[tuple[str, str]] = []

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one walker per scan: a split folder is resolved once, not once a class
    def parent_inside(self, parent: str) -> bool:
        return self.inside(os.path.realpath(parent))

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    def start(self, folder: str, split: str, label: int) -> None:
        if os.path.islink(folder) or not self.parent_inside(os.path.dirname(folder)):
            self.follow(folder, split, label)
        else:
            self.walk(folder, split, label, via_link=False)

    def follow(self, link: str, split: str, label: int) -> None:
        real = os.path.realpath(link)
        if not self.inside(real):
            self.skipped.append((link, f"a link out of the data folder (to {real}); lrlab never leaves the data folder "
                                       "through a folder link: move or copy those images in"))
        else:
            self.linked.append((link, split, label))

    def walk(self, top: str, split: str, label: int, via_link: bool) -> None:
        pending = [top]
        while pending:
            folder = pending.pop()
            try:
                stat = os.stat(folder)
                entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
            except OSError as error:
                self.skipped.append((folder, f"folder cannot be read ({error.strerror or error}); check its permissions"))
                continue
            if (stat.st_dev, stat.st_ino) in self.seen_folders:
                self.skipped.append((folder, f"a link to a folder already listed ({os.path.realpath(folder)}): a loop or a second way in, listed once"))
                continue
            self.seen_folders.add((stat.st_dev, stat.st_ino))
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif entry.is_symlink() and entry.is_dir():
                        self.follow(entry.path, split, label)
                    else:
                        self.add(entry, stat.st_dev, split, label, via_link)
                except OSError as error:
                    self.skipped.append((entry.path, f"cannot be read ({error.strerror or error})"))

    def add(self, entry: os.DirEntry, device: int, split: str, label: int, via_link: bool) -> None:
        is_link = entry.is_symlink()
        try:
            stat = os.stat(entry.path) if is_link else None
        except OSError:  # a broken link: listed, so the scan reports it with its reason
            self.found[entry.path] = (split, label, True)
            return
        key = (stat.st_dev, stat.st_ino) if stat else (device, entry.inode())
        reached_by_link = via_link or is_link
        earlier = self.by_file.get(key)
        if earlier is None:
            self.by_file[key], self.found[entry.path] = entry.path, (split, label, reached_by_link)
            return
        if self.found[earlier][2] and not reached_by_link:  # the path without a link wins
            del self.found[earlier]
            self.by_file[key], self.found[entry.path] = entry.path, (split, label, False)
            earlier, entry_path = entry.path, earlier
        else:
            entry_path = entry.path
        self.skipped.append((entry_path, f"the same file as {earlier} (a link or a second path to it): listed once"))
