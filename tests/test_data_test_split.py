"""The held-out test/ split: counted by the scan, never opened by training, handed to the evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.data_fixtures import cache_dir_fixture, random_images  # noqa: F401 - fixtures
from train.config import ConfigError
from train.data.scan import held_out_test_split, scan

REPO = Path(__file__).resolve().parents[1]


def three_splits(root: Path, classes=("a", "b", "c"), test_classes=None, garbage_test=False) -> Path:
    for c, name in enumerate(classes):
        random_images(root / "train" / name, 6, c)
        random_images(root / "val" / name, 2, 100 + c)
    for c, name in enumerate(test_classes or classes):
        random_images(root / "test" / name, 3, 200 + c)
        if garbage_test:  # anything that opened them would have to skip them: visible in the report
            for path in (root / "test" / name).iterdir():
                path.write_bytes(b"not an image at all")
    return root


def test_the_scan_counts_test_but_trains_and_validates_without_it(tmp_path, cache_dir):
    root = three_splits(tmp_path / "d", garbage_test=True)
    report = scan(root, 0.2, 42, 32)
    assert (len(report.train), len(report.val)) == (18, 6)
    assert not any("/test/" in path for path, _ in report.train + report.val)
    assert not any("/test/" in s.path for s in report.skipped)  # never opened, so never found unreadable
    assert report.test_folder == str(root / "test") and report.test_files == {"a": 3, "b": 3, "c": 3}
    written = json.loads(report.to_json())
    assert written["test"]["files"] == 9 and written["test"]["per_class"] == {"a": 3, "b": 3, "c": 3}
    assert "held out: 9 files" in report.summary()


_COUNT_OPENS = textwrap.dedent("""
    import sys
    test_folder = sys.argv[1] + "/test/"
    opened = []
    sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and str(args[0]).startswith(test_folder) else None)
    from pathlib import Path
    from train.data.cache import open_images
    from train.data.pipeline import make_datasets
    from train.data.scan import scan
    report = scan(Path(sys.argv[1]), 0.2, 42, 32)
    images = open_images([p for p, _ in report.train + report.val], 32, sys.argv[2])
    train, val = make_datasets(report, images, 4, 42, augment=False)
    for dataset in (train, val, train):
        for _ in dataset:
            pass
    print(len(images.paths), images.decoded, len(opened))
""")


@pytest.mark.parametrize("mode", ["none", "disk"])
def test_training_and_validation_never_open_a_test_image(tmp_path, cache_dir, mode):
    root = three_splits(tmp_path / "d")
    env = {**os.environ, "PYTHONPATH": str(REPO), "LRLAB_CACHE": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", _COUNT_OPENS, str(root), mode], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows, decoded, test_opens = (int(value) for value in done.stdout.split()[-3:])
    assert rows == 24 and decoded == (0 if mode == "none" else 24)
    assert test_opens == 0  # Python's own audit events: every open() of a file under d/test/


def test_the_evaluation_gets_test_images_labelled_by_the_training_classes(tmp_path, cache_dir):
    root = three_splits(tmp_path / "d", test_classes=("a", "c"))
    (root / "test" / "c" / "broken.png").write_bytes(b"\x89PNG broken")
    split = held_out_test_split(root, 32)
    assert split.class_names == ["a", "b", "c"] and split.folder == str(root / "test")
    assert len(split.paths) == 6 and all("/test/" in path for path in split.paths)
    assert {Path(path).parent.name: label for path, label in zip(split.paths, split.labels, strict=True)} == {"a": 0, "c": 2}
    assert [Path(s.path).name for s in split.skipped] == ["broken.png"]


def test_without_val_the_test_folder_validates_and_there_is_no_held_out_split(tmp_path, cache_dir):
    root = three_splits(tmp_path / "d")
    for folder in sorted((root / "val").rglob("*"), reverse=True):
        folder.unlink() if folder.is_file() else folder.rmdir()
    (root / "val").rmdir()
    report = scan(root, 0.2, 42, 32)
    assert all("/test/" in path for path, _ in report.val) and report.test_folder == ""
    assert held_out_test_split(root, 32) is None


def test_a_test_class_that_train_lacks_is_one_line(tmp_path, cache_dir):
    root = three_splits(tmp_path / "d", test_classes=("a", "zebra"))
    with pytest.raises(ConfigError, match="zebra") as error:
        scan(root, 0.2, 42, 32)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="zebra"):
        held_out_test_split(root, 32)


def test_the_demo_holds_out_ten_test_images_a_class(cache_dir):
    from train.data.demo import CLASSES, demo_folder

    report = scan(demo_folder(), 0.2, 42, 32)
    assert (len(report.train), len(report.val)) == (288, 72)  # as before the test split: the demo trains as fast
    assert report.test_files == dict.fromkeys(sorted(CLASSES), 10)
    split = held_out_test_split("demo", 32)
    assert len(split.paths) == 60 and np.bincount(split.labels).tolist() == [10] * 6 and not split.skipped
    assert not set(split.paths) & {path for path, _ in report.train + report.val}


_TRAIN = textwrap.dedent("""
    import json, sys
    test_folder = sys.argv[1] + "/test/"
    opened = []
    sys.addaudithook(lambda event, args: opened.append(1) if event == "open" and str(args[0]).startswith(test_folder) else None)
    import mlflow
    from train import contract
    from train.config import TrainConfig
    from train.run.trainer import train
    result = train(TrainConfig(data=sys.argv[1], stage="scratch", weights="none", image_size=48, alpha=0.35, epochs=1,
                               batch_size=8, experiment="held-out"))
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/{contract.DATA_REPORT_FILE}"))
    print(len(opened), report["test"]["files"], report["images"]["train"], report["images"]["val"])
""")


@pytest.mark.slow  # trains for real
def test_a_training_run_never_opens_a_test_image_and_its_data_report_counts_them(tmp_path, cache_dir):
    root = three_splits(tmp_path / "d")
    env = {**os.environ, "PYTHONPATH": str(REPO), "LRLAB_CACHE": str(cache_dir), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    done = subprocess.run([sys.executable, "-c", _TRAIN, str(root)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    test_opens, test_files, train_images, val_images = (int(value) for value in done.stdout.split()[-4:])
    assert (test_files, train_images, val_images) == (9, 18, 6)
    assert test_opens == 0  # an epoch, validation, the confusion matrix, the model's signature: no test/ file opened
