"""Odd cache states: dead and live writers, failures mid-way, a full disk, read-only and unusable cache folders."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.data_fixtures import cache_dir_fixture, random_images, read_only_folder_fixture  # noqa: F401 - fixtures
from train.data import cache
from train.data.entry import PARTIAL, prepared_root
from train.data.scan import scan

REPO = Path(__file__).resolve().parents[1]


def folder_of(root: Path, per_class: int = 6, size: int = 24) -> Path:
    random_images(root / "a", per_class, 1, size)
    random_images(root / "b", per_class, 2, size)
    return root


def _paths(report) -> list[str]:
    return [path for path, _ in report.train + report.val]


def _env(cache_dir: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "LRLAB_CACHE": str(cache_dir)}


# Scans, then waits for a line on stdin before preparing: the test can change the folder in between.
_PREPARE_AFTER_SIGNAL = textwrap.dedent("""
    import sys
    from pathlib import Path
    from train.config import ConfigError
    from train.data.cache import open_images
    from train.data.scan import scan
    report = scan(Path(sys.argv[1]), 0.25, 42, 32)
    print("scanned", flush=True)
    sys.stdin.readline()
    try:
        images = open_images([p for p, _ in report.train + report.val], 32, "disk")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print("decoded", images.decoded, flush=True)
""")


def _start_writer(folder: Path, cache_dir: Path, block_on: Path) -> subprocess.Popen:
    """A real process that is preparing `folder` and stays in the middle of it: after its scan, `block_on`
    becomes a named pipe, and decoding waits on it for a writer that never comes."""
    writer = subprocess.Popen([sys.executable, "-c", _PREPARE_AFTER_SIGNAL, str(folder)], env=_env(cache_dir),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "scanned"
    block_on.unlink()
    os.mkfifo(block_on)
    writer.stdin.write("go\n")
    writer.stdin.flush()
    deadline = time.monotonic() + 60
    while not list(prepared_root().glob(f"*{PARTIAL}*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return writer


def test_clear_leaves_a_live_writer_alone_and_the_next_open_removes_what_a_killed_one_left(tmp_path, cache_dir):
    folder = folder_of(tmp_path / "d")
    writer = _start_writer(folder, cache_dir, block_on=folder / "b" / "2_5.png")
    try:
        [partial] = prepared_root().glob(f"*{PARTIAL}*")
        cleared = subprocess.run([sys.executable, "-m", "train.data.cache", "--clear"], env=_env(cache_dir), capture_output=True, text=True, timeout=120)
        assert cleared.returncode == 0 and "left alone" in cleared.stdout, cleared.stderr
        assert partial.exists() and partial.with_name(partial.name.split(PARTIAL)[0] + ".lock").exists()
    finally:
        writer.send_signal(signal.SIGKILL)  # as the out-of-memory killer would
        writer.wait(timeout=60)
    assert partial.exists()  # killed: nothing removed it
    other = scan(folder_of(tmp_path / "other", 2), 0.5, 42, 32)
    cache.open_images(_paths(other), 32, "disk")  # any later open
    assert not partial.exists() and not list(prepared_root().glob(f"*{PARTIAL}*"))


_COUNT_DECODES = textwrap.dedent("""
    import sys
    from pathlib import Path
    folder = sys.argv[1] + "/"
    opened = []
    sys.addaudithook(lambda event, args: opened.append(1) if event == "open" and str(args[0]).startswith(folder) else None)
    from PIL import Image
    from train.config import ConfigError
    from train.data.cache import open_images
    Image.init()  # Pillow loads its format plugins on the first file it cannot identify: not what is measured
    paths = sorted(str(p) for p in Path(folder).rglob("*.png"))
    try:
        open_images(paths, 32, "disk")
    except ConfigError as error:
        print("error:", error, file=sys.stderr)
    print(len(opened), len(paths))
""")


def test_preparing_stops_at_the_first_image_that_fails_and_leaves_nothing(tmp_path, cache_dir):
    folder = folder_of(tmp_path / "d", per_class=300)
    (folder / "a" / "1_0.png").write_bytes(b"changed since the scan")  # the first row
    done = subprocess.run([sys.executable, "-c", _COUNT_DECODES, str(folder)], env=_env(cache_dir), capture_output=True, text=True, timeout=300)
    opened, total = (int(value) for value in done.stdout.split())
    assert "1_0.png' changed" in done.stderr and "since the scan" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert total == 600 and opened <= (os.cpu_count() or 2) + 1, opened  # each thread stopped at its next image (was: a chunk of 64 a thread)
    assert not list(prepared_root().glob("*/"))  # no partial entry the size of the data set left behind


def test_a_file_deleted_between_scan_and_preparation_is_skipped_with_its_reason(tmp_path, cache_dir):
    folder = folder_of(tmp_path / "d")
    report = scan(folder, 0.25, 42, 32)
    gone = folder / "b" / "2_3.png"
    gone.unlink()
    images = cache.open_report_images(report, 32, "disk")
    assert images.decoded == 11 and str(gone) not in images.paths
    assert str(gone) not in _paths(report) and len(_paths(report)) == 11
    assert [(s.path, s.reason) for s in report.skipped] == [(str(gone), "deleted since the scan")]


@pytest.mark.parametrize("content", ["null", "[]", "7", '{"version": 1}'])
def test_a_meta_that_is_not_one_is_rebuilt_and_listed(tmp_path, cache_dir, content):
    report = scan(folder_of(tmp_path / "d"), 0.25, 42, 32)
    key = cache.open_images(_paths(report), 32, "disk").key
    (prepared_root() / key / cache.META_FILE).write_text(content)
    listed = subprocess.run([sys.executable, "-m", "train.data.cache"], env=_env(cache_dir), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "incomplete or corrupt" in listed.stdout, listed.stderr
    cache._open_in_process.clear()
    assert cache.open_images(_paths(report), 32, "disk").decoded == 12


def test_the_command_lists_and_clears_scan_memories_and_converted_copies(tmp_path, cache_dir):
    report = scan(folder_of(tmp_path / "d"), 0.25, 42, 32)
    cache.open_images(_paths(report), 32, "disk")
    (cache_dir / "converted").mkdir()
    (cache_dir / "converted" / "old.png").write_bytes(b"x" * 100)  # left by an earlier version
    listed = subprocess.run([sys.executable, "-m", "train.data.cache"], env=_env(cache_dir), capture_output=True, text=True, timeout=120).stdout
    assert "1 scan memories" in listed and "1 converted images from earlier versions" in listed
    subprocess.run([sys.executable, "-m", "train.data.cache", "--clear"], env=_env(cache_dir), capture_output=True, text=True, timeout=120, check=True)
    assert not (cache_dir / "scans").exists() and not (cache_dir / "converted").exists() and not list(prepared_root().iterdir())


_OPEN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from train.config import ConfigError
    from train.data.cache import open_report_images
    from train.data.scan import scan
    try:
        report = scan(Path(sys.argv[1]), 0.25, 42, 32)
        images = open_report_images(report, 32, sys.argv[2])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(images.mode, images.decoded, len(images.paths))
""")


def _open(folder: Path, cache_dir: Path, mode: str, prefix=(), preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-c", _OPEN, str(folder), mode], env=_env(cache_dir), capture_output=True,
                          text=True, timeout=300, preexec_fn=preexec_fn)


def test_a_complete_entry_in_a_read_only_cache_is_used_as_it_is(tmp_path, cache_dir, read_only_folder):
    folder = folder_of(tmp_path / "d")
    assert _open(folder, cache_dir, "disk").stdout.split() == ["disk", "12", "12"]
    prefix = read_only_folder(cache_dir)
    for mode in ("disk", "memory"):
        done = _open(folder, cache_dir, mode, prefix)
        assert done.returncode == 0 and done.stdout.split() == [mode, "0", "12"], done.stderr[-2000:]
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("state", ["read_only", "a_file"])
def test_an_unusable_cache_folder_is_one_line_and_cache_none_does_not_need_it(tmp_path, read_only_folder, state):
    folder = folder_of(tmp_path / "d")
    cache_dir = tmp_path / "cache"
    prefix = ()
    if state == "a_file":
        cache_dir.write_text("not a folder")
    else:
        cache_dir.mkdir()
        prefix = read_only_folder(cache_dir)
    failed = _open(folder, cache_dir, "auto", prefix)
    [line] = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert str(cache_dir) in line and ("LRLAB_CACHE" in line and "cache=none" in line)
    none = _open(folder, cache_dir, "none", prefix)
    assert none.returncode == 0 and none.stdout.split() == ["none", "0", "12"], none.stderr[-2000:]


def _small_files_only():
    # A disk that fills up while the entry is written: the kernel refuses to grow any file of this
    # process beyond 100 KB (EFBIG, as ENOSPC would), after the free-space check passed.
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


def test_a_disk_that_fills_up_while_preparing_is_one_line_and_leaves_nothing(tmp_path, cache_dir):
    folder = folder_of(tmp_path / "d", per_class=40)  # 80 images at 32 px: 240 KB of rows
    done = _open(folder, cache_dir, "disk", preexec_fn=_small_files_only)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "ran out of room" in done.stderr and "LRLAB_CACHE" in done.stderr
    assert not list(prepared_root().glob("*/"))
    assert json.loads(next((cache_dir / "scans").glob("*.json")).read_text())  # the small scan memory was written



def test_the_demo_cannot_be_generated_in_a_cache_that_is_a_file_and_says_so(tmp_path, monkeypatch):
    from train.config import ConfigError
    from train.data.demo import demo_folder

    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("LRLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="demo data set cannot be written to .*; point LRLAB_CACHE at a writable folder") as error:
        demo_folder()
    assert "\n" not in str(error.value)
