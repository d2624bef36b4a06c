"""Hostile folders: links out and loops, files Pillow chokes on, odd scan-memory states."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.data_fixtures import cache_dir_fixture, random_images, read_only_folder_fixture  # noqa: F401 - fixtures
from train.data.scan import scan

REPO = Path(__file__).resolve().parents[1]


def two_classes(root: Path, per_class: int = 4) -> Path:
    random_images(root / "a", per_class, 1)
    random_images(root / "b", per_class, 2)
    return root


def _all(report) -> list[str]:
    return [path for path, _ in report.train + report.val]


def test_a_loop_lists_each_image_once_and_none_in_both_splits(tmp_path, cache_dir):
    root = two_classes(tmp_path / "d")
    (root / "a" / "x").symlink_to(".")  # x -> a itself: os.walk(followlinks=True) went round 40 levels deep
    (root / "b" / "up").symlink_to("..")  # b/up -> the data folder: a and b again
    report = scan(root, 0.25, 42, 32)
    paths = _all(report)
    assert len(paths) == 8 and len({os.path.realpath(path) for path in paths}) == 8
    assert not {os.path.realpath(p) for p, _ in report.train} & {os.path.realpath(p) for p, _ in report.val}
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert "already listed" in reasons["x"] and "loop" in reasons["x"]


def test_a_class_folder_linked_out_of_the_data_folder_is_not_walked(tmp_path, cache_dir):
    root = two_classes(tmp_path / "d")
    random_images(tmp_path / "elsewhere" / "more", 5, 3)
    (root / "a" / "more").symlink_to(tmp_path / "elsewhere" / "more")
    report = scan(root, 0.25, 42, 32)
    assert len(_all(report)) == 8 and not any("elsewhere" in path for path in _all(report))
    [skipped] = report.skipped
    assert skipped.path == str(root / "a" / "more") and "out of the data folder" in skipped.reason


def test_a_class_linked_to_the_root_of_the_machine_is_one_line_in_seconds(tmp_path, cache_dir):
    root = two_classes(tmp_path / "d")
    (root / "everything").symlink_to("/")
    code = "import sys; from pathlib import Path; from train.data.scan import scan; scan(Path(sys.argv[1]), 0.2, 42, 32)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, str(root)], env=env, capture_output=True, text=True, timeout=120)
    assert "class 'everything'" in done.stderr and "out of the data folder" in done.stderr, done.stderr[-2000:]


def test_a_file_linked_into_another_split_stays_in_one(tmp_path, cache_dir):
    for split in ("train", "val"):
        random_images(tmp_path / split / "a", 3, 10 if split == "train" else 20)
        random_images(tmp_path / split / "b", 3, 11 if split == "train" else 21)
    (tmp_path / "val" / "a" / "copy.png").symlink_to(tmp_path / "train" / "a" / "10_0.png")
    (tmp_path / "train" / "b" / "hard.png").hardlink_to(tmp_path / "val" / "b" / "21_0.png")
    report = scan(tmp_path, 0.2, 42, 32)
    train = {os.path.realpath(path) for path, _ in report.train}
    val = {os.path.realpath(path) for path, _ in report.val}
    assert not train & val and len(train) + len(val) == 12  # 12 real files, each listed once
    assert {Path(s.path).name for s in report.skipped} == {"copy.png", "21_0.png"}  # a hard link: the first path wins
    assert all("the same file as" in s.reason for s in report.skipped)


def test_any_error_a_hostile_file_raises_skips_that_file(tmp_path, cache_dir):
    root = two_classes(tmp_path / "d")
    # An IM header whose size Pillow parses as a float: a TypeError, not one of OSError/SyntaxError/ValueError.
    (root / "a" / "typeerror.im").write_bytes(b"Image type: RGB image\r\nImage size (x*y): .6*16\r\n\x1a" + bytes(1024))
    os.mkfifo(root / "b" / "pipe.png")
    report = scan(root, 0.25, 42, 32)
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert "TypeError" in reasons["typeerror.im"]
    assert "pipe.png" in reasons and len(_all(report)) == 8


def test_the_scan_memory_forgets_files_that_are_gone(tmp_path, cache_dir):
    root = two_classes(tmp_path / "d", per_class=5)
    scan(root, 0.2, 42, 32)
    for path in sorted((root / "a").iterdir())[:3]:
        path.unlink()
    scan(root, 0.2, 42, 32)
    [memory] = (cache_dir / "scans").glob("*.json")
    remembered = json.loads(memory.read_text())
    assert len(remembered) == 7 and all(Path(path).exists() for path in remembered)


@pytest.mark.parametrize("content", ["[]", "7", "null", '{"x": 3}', '{"%s": [1, 2, 3]}', "{half"])
def test_a_scan_memory_holding_anything_else_is_rebuilt(tmp_path, cache_dir, content):
    root = two_classes(tmp_path / "d")
    assert scan(root, 0.25, 42, 32).inspected == 8
    [memory] = (cache_dir / "scans").glob("*.json")
    memory.write_text(content.replace("%s", str(root / "a" / "1_0.png")))
    again = scan(root, 0.25, 42, 32)
    assert again.inspected == 8 and len(_all(again)) == 8
    assert scan(root, 0.25, 42, 32).inspected == 0  # and it is remembered again


_SCAN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from train.data.scan import scan
    report = scan(Path(sys.argv[1]), 0.25, 42, 32)
    print(len(report.train) + len(report.val))
""")


@pytest.mark.parametrize("cache", ["file", "read_only"])
def test_a_cache_folder_that_cannot_be_written_does_not_stop_a_scan(tmp_path, cache, read_only_folder):
    root = two_classes(tmp_path / "d")
    folder = tmp_path / "cache"
    if cache == "file":
        folder.write_text("LRLAB_CACHE pointing at a file")
        prefix = []
    else:
        folder.mkdir()
        prefix = read_only_folder(folder)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LRLAB_CACHE": str(folder)}
    done = subprocess.run([*prefix, sys.executable, "-c", _SCAN, str(root)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split()[-1] == "8", done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "the scan is not remembered" in done.stderr

