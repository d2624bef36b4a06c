"""Real data at real scale: a folder is scanned once and decoded once, then reused; memory stays bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.config import ConfigError
from train.data import cache, cache_admin
from train.data.images import decode_file
from train.data.scan import scan

REPO = Path(__file__).resolve().parents[1]


def photo(seed: int, size=(120, 90)) -> Image.Image:
    """A smooth random picture (JPEG-friendly, so files stay small and decode like photos)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def photo_folder(folder: Path, per_class: int, classes=("cats", "dogs"), size=(120, 90)) -> Path:
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            photo(c * 10_000 + i, size).save(folder / name / f"{i:05d}.jpg", quality=90)
    return folder


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LRLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def all_paths(report):
    return [path for path, _ in report.train + report.val]


def test_second_open_decodes_nothing_and_every_mode_gives_the_same_pixels(tmp_path, cache_dir):
    report = scan(photo_folder(tmp_path / "d", 6), 0.25, 42, 48)
    paths = all_paths(report)
    first = cache.open_images(paths, 48, "memory")
    assert (first.decoded, first.reused, first.mode) == (12, False, "memory")
    cache._open_in_process.clear()  # as a new process would
    again = cache.open_images(paths, 48, "disk")
    assert (again.decoded, again.reused, again.mode, again.key) == (0, True, "disk", first.key)
    decoded_now = cache.ImageSource(48, sorted(paths))  # cache=none decodes on every read
    rows = np.arange(len(paths))[::-1]
    expected = np.stack([decode_file(first.paths[row], 48) for row in rows])
    for source in (first, again, decoded_now):
        assert np.array_equal(source.gather(rows), expected)


def test_a_changed_file_gets_a_new_entry_and_only_it_is_rescanned(tmp_path, cache_dir):
    folder = photo_folder(tmp_path / "d", 6)
    report = scan(folder, 0.25, 42, 48)
    assert report.inspected == 12
    key = cache.open_images(all_paths(report), 48, "auto").key
    photo(999).save(folder / "cats" / "00003.jpg", quality=90)
    os.utime(folder / "cats" / "00003.jpg", ns=(1, 1))  # a new mtime even on coarse file systems
    report = scan(folder, 0.25, 42, 48)
    assert report.inspected == 1
    changed = cache.open_images(all_paths(report), 48, "auto")
    assert changed.key != key and changed.decoded == 12
    row = changed.rows_of([str(folder / "cats" / "00003.jpg")])
    assert np.array_equal(changed.gather(row)[0], decode_file(str(folder / "cats" / "00003.jpg"), 48))


def test_the_scan_is_remembered_and_picks_up_added_and_removed_files(tmp_path, cache_dir):
    folder = photo_folder(tmp_path / "d", 5)
    assert scan(folder, 0.2, 42, 48).inspected == 10
    assert scan(folder, 0.2, 42, 48).inspected == 0
    photo(77).save(folder / "dogs" / "new.jpg")
    (folder / "cats" / "00000.jpg").unlink()
    (folder / "cats" / "broken.jpg").write_bytes(b"not a jpeg")
    report = scan(folder, 0.2, 42, 48)
    assert report.inspected == 2
    paths = all_paths(report)
    assert str(folder / "dogs" / "new.jpg") in paths and str(folder / "cats" / "00000.jpg") not in paths
    assert [s.path for s in report.skipped] == [str(folder / "cats" / "broken.jpg")]
    again = scan(folder, 0.2, 42, 48)  # skipped files are remembered too, with their reason
    assert again.inspected == 0 and [s.reason for s in again.skipped] == [s.reason for s in report.skipped]


@pytest.mark.parametrize("damage", ["partial", "truncated", "overwritten"])
def test_a_partial_or_corrupt_entry_is_rebuilt(tmp_path, cache_dir, damage):
    report = scan(photo_folder(tmp_path / "d", 6), 0.25, 42, 48)
    paths = all_paths(report)
    entry = cache.prepared_root() / cache.open_images(paths, 48, "disk").key
    data = entry / cache.DATA_FILE
    if damage == "partial":
        (entry / cache.META_FILE).unlink()  # killed before it finished
    elif damage == "truncated":
        os.truncate(data, data.stat().st_size // 2)
    else:
        with open(data, "r+b") as handle:
            handle.write(b"\xff" * 100)  # row 0 is always among the checksummed rows
    cache._open_in_process.clear()
    rebuilt = cache.open_images(paths, 48, "disk")
    assert rebuilt.decoded == 12
    assert np.array_equal(rebuilt.gather(np.array([0])), decode_file(rebuilt.paths[0], 48)[None])


_PREPARE = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from train.data import cache
    from train.data.scan import scan
    report = scan(__import__("pathlib").Path(sys.argv[1]), 0.2, 42, 64)
    images = cache.open_images([p for p, _ in report.train + report.val], 64, sys.argv[2])
    pixels = images.gather(np.arange(len(images.paths)))
    print(images.decoded, hashlib.sha1(pixels.tobytes()).hexdigest())
""")


def test_two_processes_preparing_the_same_folder_decode_it_once_and_read_the_same_images(tmp_path, cache_dir):
    import fcntl
    import hashlib
    import time

    folder = photo_folder(tmp_path / "d", 150, size=(320, 240))
    paths = sorted(all_paths(scan(folder, 0.2, 42, 64)))
    entry = cache.prepared_root() / cache.entry_key(paths, 64)
    entry.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Hold the entry's lock, as a third process in the middle of preparing would, so both
    # runs start while it is taken and must take turns once it is released.
    with open(entry.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        logs = [tmp_path / f"{mode}.err" for mode in ("memory", "disk")]
        runs = [subprocess.Popen([sys.executable, "-c", _PREPARE, str(folder), log.stem], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
                for log in logs]
        deadline = time.monotonic() + 120
        while not all("waiting for another process" in log.read_text() for log in logs) and time.monotonic() < deadline:
            time.sleep(0.2)
        fcntl.flock(lock, fcntl.LOCK_UN)
    outputs = [(run.communicate(timeout=300)[0], log.read_text()) for run, log in zip(runs, logs, strict=True)]
    assert all(run.returncode == 0 for run in runs), outputs
    assert all("waiting for another process" in err for _, err in outputs), outputs
    results = [out.split() for out, _ in outputs]
    assert sorted(int(decoded) for decoded, _ in results) == [0, 300]  # one decoded, the other waited and read
    expected = np.stack([decode_file(path, 64) for path in paths])
    assert {digest for _, digest in results} == {hashlib.sha1(expected.tobytes()).hexdigest()}


def _class_folders(root: Path, split: str, classes=("x", "y"), per_class=2):
    for c, name in enumerate(classes):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            photo(len(split) * 1000 + c * 100 + i).save(root / split / name / f"{i}.jpg")


def test_train_and_test_folders_validate_on_test(tmp_path, cache_dir):
    _class_folders(tmp_path, "train", per_class=3)
    _class_folders(tmp_path, "test")
    report = scan(tmp_path, 0.2, 42, 48)
    assert report.class_names == ["x", "y"] and report.layout == "train_val"
    assert len(report.train) == 6 and all("/test/" in path for path, _ in report.val) and len(report.val) == 4


def test_train_alone_is_split(tmp_path, cache_dir):
    _class_folders(tmp_path, "train", per_class=5)
    report = scan(tmp_path, 0.2, 42, 48)
    assert report.class_names == ["x", "y"] and report.layout == "split" and len(report.val) == 2


@pytest.mark.parametrize(("folders", "message"), [
    ({"train": ("x", "y"), "val": ("x", "y"), "validation": ("x", "y")}, "both 'val/' and 'validation/'"),
    ({"train": ("x", "y"), "cats": ()}, "'train/' beside other folders (cats)"),
    ({"test": ("x", "y"), "cats": ()}, "a 'test/' folder but no 'train/'"),
    ({"train": ("x", "y"), "val": ("x", "y", "z")}, "z in '.*val' is not in '.*train'"),
])
def test_ambiguous_layouts_are_one_line_errors(tmp_path, cache_dir, folders, message):
    for split, classes in folders.items():
        (tmp_path / split).mkdir()
        _class_folders(tmp_path, split, classes) if classes else photo(0).save(tmp_path / split / "0.jpg")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        scan(tmp_path, 0.2, 42, 48)
    assert "\n" not in str(error.value)


def test_a_decompression_bomb_and_a_broken_link_are_skipped_with_their_reason(tmp_path, cache_dir):
    folder = photo_folder(tmp_path / "d", 3)
    Image.new("1", (15_000, 15_000)).save(folder / "cats" / "bomb.png")  # 225 Mpixel in a few KB
    (folder / "dogs" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    report = scan(folder, 0.3, 42, 48)
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(reasons) == {"bomb.png", "gone.jpg"}
    assert "decompression bomb" in reasons["bomb.png"] and "broken link" in reasons["gone.jpg"]


def test_the_cache_command_lists_and_clears_entries(tmp_path, cache_dir):
    report = scan(photo_folder(tmp_path / "d", 4), 0.25, 42, 48)
    key = cache.open_images(all_paths(report), 48, "disk").key
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    listing = subprocess.run([sys.executable, "-m", "train.data.cache"], env=env, capture_output=True, text=True, check=True).stdout
    assert key in listing and "8 images at   48 px" in listing
    missing = subprocess.run([sys.executable, "-m", "train.data.cache", "--clear", "nope"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no cache entry 'nope'")
    cleared = subprocess.run([sys.executable, "-m", "train.data.cache", "--clear"], env=env, capture_output=True, text=True, check=True).stdout
    assert cleared.startswith("removed ") and not (cache.prepared_root() / key).exists()
    assert cache_admin.entries() == []


def test_the_pipelines_read_every_image_once_per_epoch_in_a_new_order(tmp_path, cache_dir):
    from train.data.pipeline import make_datasets

    report = scan(photo_folder(tmp_path / "d", 10), 0.2, 42, 32)
    images = cache.open_images(all_paths(report), 32, "disk")
    train, val = make_datasets(report, images, batch_size=4, seed=1, augment=False)
    epochs = [np.concatenate([labels.numpy() for _, labels in train]) for _ in range(2)]
    pixels = [np.concatenate([batch.numpy() for batch, _ in train]) for _ in range(2)]
    assert len(epochs[0]) == len(report.train) and sorted(epochs[0]) == sorted(label for _, label in report.train)
    assert not np.array_equal(pixels[0], pixels[1])  # reshuffled each epoch
    assert np.array_equal(np.sort(pixels[0].reshape(len(pixels[0]), -1), axis=0), np.sort(pixels[1].reshape(len(pixels[1]), -1), axis=0))
    val_images = np.concatenate([batch.numpy() for batch, _ in val])
    expected = np.stack([decode_file(path, 32) for path, _ in report.val])
    assert val_images.dtype == np.uint8 and np.array_equal(val_images, expected)  # the model casts to float32 itself


_PEAK_RSS = textwrap.dedent("""
    import sys
    from pathlib import Path

    from bench.peak_memory import peak_rss  # this process's own peak, not its parent's (a worker that trained)
    import tensorflow  # its start-up peak comes first, before the images are read
    from train.data import cache
    from train.data.pipeline import make_datasets
    from train.data.scan import scan
    folder, mode, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    report = scan(folder, 0.2, 42, size)
    images = cache.open_images([p for p, _ in report.train + report.val], size, mode)
    train, val = make_datasets(report, images, 32, 42, False)
    for _ in range(2):
        for batch in train:
            pass
        for batch in val:
            pass
    print(peak_rss())
""")


def _peak_rss(folder: Path, mode: str, size: int, cwd: Path, repeats: int = 2) -> int:
    """The lowest peak RSS of `repeats` processes: what the work needs, without the noise of a busy machine."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    peaks = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(folder), mode, str(size)], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        peaks.append(int(done.stdout.split()[-1]))
    return min(peaks)


@pytest.mark.slow
def test_cache_disk_keeps_memory_flat_as_images_are_added_and_memory_grows_by_their_size(tmp_path, cache_dir):
    # Both folders hold many batches, and the pipeline's buffers are a fixed number of
    # batches, so only the images' own memory differs between them.
    size = 96
    small = photo_folder(tmp_path / "small", 300, size=(120, 90))
    large = photo_folder(tmp_path / "large", 2000, size=(120, 90))
    added_bytes = (4000 - 600) * size * size * 3  # 94 MB of uint8 images more
    for folder in (small, large):  # prepare first (here: no process, no TensorFlow), so the measured processes only read
        cache.open_images(all_paths(scan(folder, 0.2, 42, size)), size, "disk")
    # tf.data's AUTOTUNE sizes its buffers by how fast producer and consumer run, so a loaded machine
    # holds more batches in flight: disk grew 4.3 MB measured alone, 20.0 MB once under the full suite.
    # Three processes each (the lowest peak) and a bound of 0.35 still part disk (flat) from memory (>= 0.7).
    disk = _peak_rss(large, "disk", size, tmp_path, repeats=3) - _peak_rss(small, "disk", size, tmp_path, repeats=3)
    memory = _peak_rss(large, "memory", size, tmp_path) - _peak_rss(small, "memory", size, tmp_path)
    print(f"peak RSS growth for {added_bytes / 1e6:.0f} MB more images: disk {disk / 1e6:.1f} MB, memory {memory / 1e6:.1f} MB")
    assert disk < 0.35 * added_bytes, (disk, memory)
    assert 0.7 * added_bytes < memory < 1.5 * added_bytes, (disk, memory)


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_decodes_nothing_and_logs_what_it_cost(tmp_path, cache_dir, monkeypatch):
    import mlflow

    from train import contract
    from train.config import TrainConfig
    from train.run.trainer import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    folder = photo_folder(tmp_path / "d", 12)
    base = dict(data=str(folder), stage="scratch", weights="none", image_size=48, alpha=0.35, epochs=1, batch_size=8, experiment="cache")
    first = train(TrainConfig(**base, cache="memory"))
    second = train(TrainConfig(**base, cache="disk", lr=3e-4))
    client = mlflow.MlflowClient()
    runs = [client.get_run(result.run_id).data for result in (first, second)]
    assert runs[0].metrics[contract.DATA_IMAGES_DECODED] == 24 and runs[0].metrics[contract.DATA_CACHE_REUSED] == 0
    assert runs[1].metrics[contract.DATA_IMAGES_DECODED] == 0 and runs[1].metrics[contract.DATA_CACHE_REUSED] == 1
    assert runs[1].metrics[contract.DATA_FILES_OPENED] == 0
    assert runs[0].tags[contract.TAG_DATA_CACHE].startswith("memory ") and runs[1].tags[contract.TAG_DATA_CACHE].startswith("disk ")
    report = json.loads(Path(client.download_artifacts(second.run_id, contract.DATA_REPORT_FILE, str(tmp_path))).read_text())
    assert report["scan"]["files_opened"] == 0


def test_the_dashboard_reads_a_runs_data_costs_as_single_values_not_as_curves():
    import pandas as pd

    from app.data.histories import history_keys
    from train import contract

    runs = pd.DataFrame({"metric_keys": [[contract.LOSS, *contract.DATA_METRICS, contract.VAL_ACCURACY]]})
    assert history_keys(runs) == [contract.LOSS, contract.VAL_ACCURACY]
