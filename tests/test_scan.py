"""The folder scan: corrupt and odd files are skipped or converted, and reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from train.config import ConfigError
from train.data.scan import scan


def _image(size=40, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def make_folder(folder, layout):
    """Small folders for the data errors (also used by test_config)."""
    folder.mkdir(parents=True)
    if layout == "empty":
        return
    (folder / "cats").mkdir()
    for i in range(3):
        _image(seed=i).save(folder / "cats" / f"{i}.png")
    if layout == "one_class":
        return
    (folder / "dogs").mkdir()
    if layout == "empty_class":
        return
    if layout == "no_images":
        for name in ("cats", "dogs"):
            for f in (folder / name).iterdir():
                f.unlink()
            (folder / name / "notes.txt").write_text("not an image")
        return
    if layout == "no_validation":
        for name in ("cats", "dogs"):
            for f in (folder / name).iterdir():
                f.unlink()
            _image().save(folder / name / "only.png")


def make_odd_folder(folder):
    """Two classes of good images plus every kind of bad or unusual file."""
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(6):
            _image(seed=i + (10 if name == "b" else 0)).save(folder / name / f"good_{i}.jpg")
    a = folder / "a"
    (a / "zero.jpg").write_bytes(b"")
    (a / "text.jpg").write_text("this is not a jpeg")
    _image(200).save(a / "truncated_src.jpg", quality=95)
    data = (a / "truncated_src.jpg").read_bytes()
    (a / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (a / "truncated_src.jpg").unlink()
    (a / "readme.md").write_text("# notes")
    (a / "vector.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    b = folder / "b"
    _image().convert("L").save(b / "gray.jpg")
    _image().convert("RGBA").save(b / "rgba.png")
    _image().convert("CMYK").save(b / "cmyk.jpg")
    _image().convert("P").save(b / "palette.png")
    Image.fromarray((np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16)).save(b / "sixteen.png")
    _image().save(b / "tiff.tif")
    _image().save(b / "webp.webp")
    return folder


@pytest.fixture
def odd_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LRLAB_CACHE", str(tmp_path / "cache"))
    return make_odd_folder(tmp_path / "odd")


def test_bad_files_are_skipped_with_their_reason(odd_folder):
    report = scan(odd_folder, 0.2, 42, 64)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in report.skipped}
    assert set(reasons) == {"zero.jpg", "text.jpg", "truncated.jpg", "readme.md", "vector.svg"}
    assert "0 bytes" in reasons["zero.jpg"]
    assert "not an image" in reasons["text.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    summary = json.loads(report.to_json())
    assert len(summary["skipped"]) == 5
    assert summary["images"]["train"] + summary["images"]["val"] == 12 + 7


def test_odd_images_are_converted_and_decode_in_tensorflow(odd_folder):
    import tensorflow as tf

    from train.data.pipeline import decode_image

    report = scan(odd_folder, 0.2, 42, 64)
    converted = {p.rsplit("/", 1)[-1] for p in report.converted}
    assert converted == {"cmyk.jpg", "sixteen.png", "tiff.tif", "webp.webp"}
    for path, _ in report.train + report.val:
        image = decode_image(tf.constant(path), 32).numpy()
        assert image.shape == (32, 32, 3) and 0 <= image.min() and image.max() <= 255
    sixteen = str(odd_folder / "b" / "sixteen.png")
    assert sixteen in [path for path, _ in report.train + report.val]  # decoded from the file itself: no copy anywhere
    row = decode_image(tf.constant(sixteen), 40).numpy()[0, :6, 0]  # 0, 40, 80, ... of 65535: scaled, not clipped to 255
    assert row.tolist() == [0, 0, 0, 0, 0, 0] and decode_image(tf.constant(sixteen), 40).numpy().max() > 200
    assert not (odd_folder.parent / "cache" / "converted").exists()


def test_split_is_deterministic_by_seed_and_stratified(odd_folder):
    first, again, other = (scan(odd_folder, 0.3, seed, 64) for seed in (1, 1, 2))
    assert first.val == again.val
    assert first.val != other.val
    assert all(c["val"] >= 1 for c in first.counts().values())


def test_train_val_layout(tmp_path):
    for split in ("train", "val"):
        for name in ("x", "y"):
            (tmp_path / split / name).mkdir(parents=True)
            _image().save(tmp_path / split / name / "1.png")
    report = scan(tmp_path, 0.2, 42, 64)
    assert report.layout == "train_val" and len(report.train) == 2 and len(report.val) == 2


@pytest.mark.parametrize(("layout", "message"), [
    ("empty", "needs at least 2 class sub-folders (found none)"),
    ("one_class", "found only 'cats'"),
    ("empty_class", "class 'dogs'"),
    ("no_images", "holds no readable images"),
    ("no_validation", "validation split"),
])
def test_unusable_folders(tmp_path, layout, message):
    make_folder(tmp_path / "d", layout)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scan(tmp_path / "d", 0.2, 42, 64)
