"""Real data at real scale: memory, scan and decode on a Food-101-shaped folder.

Generates (once, cached in --workdir) folders of 101 classes of photo-sized JPEGs
(512x384, about 50 KB each) with N images, then measures side by side, in one run:

- scan time, first and again (the second only stats the files);
- preparation (the first epoch's decode) in images/s per core, with and without
  reduced-scale JPEG decoding, and how far the two differ in pixels;
- reading the prepared cache alone through the training pipeline, from memory and from
  disk, in images/s (what the model is fed from epoch 1 on);
- peak RSS of a process that prepares/opens the images and iterates a whole epoch of the
  training pipeline, for cache=auto, memory and disk, against N;
- with --runs: a real training run's time outside its epochs (64 px, 1 epoch), first and
  second run on the same folder.

    python bench/bench_data_scale.py [--sizes 1000,10000] [--image-size 224] [--runs]

Exits 1 when the second scan is not at least 20x faster than the first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from peak_memory import peak_rss  # bench/, the script's own folder, is first on sys.path
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

CLASSES = 101
TFDATA_MAX_IMAGES = 10_000  # the tf.data comparison writes a second copy of the images: only up to this size
PHOTO = [512, 384]  # Food-101's photos are at most 512 px a side; --photo 1024x768 for camera-sized ones


def _photo(seed: int) -> Image.Image:
    """Smooth colour fields plus fine noise: JPEG sizes near real photos (~50 KB at quality 85)."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(PHOTO, Image.Resampling.BICUBIC)
    noise = rng.normal(0, 10, (PHOTO[1], PHOTO[0], 3))
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def _write_class(args: tuple[Path, int, int, list[int]]) -> None:
    folder, label, count, photo = args
    PHOTO[:] = photo
    (folder / f"class_{label:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        _photo(label * 1_000_000 + i).save(folder / f"class_{label:03d}" / f"{i:05d}.jpg", quality=85)


def food_folder(workdir: Path, images: int) -> Path:
    folder = workdir / f"food-{images}-{PHOTO[0]}x{PHOTO[1]}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    per_class = [images // CLASSES + (1 if label < images % CLASSES else 0) for label in range(CLASSES)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_class, [(folder, label, count, list(PHOTO)) for label, count in enumerate(per_class)]))
    (folder / ".complete").touch()
    size = sum(p.stat().st_size for p in folder.rglob("*.jpg"))
    print(f"generated {folder}: {images} JPEGs, {size / images / 1024:.0f} KB each, in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def _in_subprocess(code: str, *args: str, env: dict) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return done.stdout.strip().splitlines()[-1]


_SCAN = """
import sys, time
from pathlib import Path
from train.data.scan import scan
started = time.perf_counter()
report = scan(Path(sys.argv[1]), 0.25, 42, int(sys.argv[2]))
print(time.perf_counter() - started, report.inspected)
"""

_PREPARE = """
import os, sys, time
from pathlib import Path
from train.data import cache
from train.data.scan import scan
report = scan(Path(sys.argv[1]), 0.25, 42, int(sys.argv[2]))
paths = [p for p, _ in report.train + report.val]
started = time.perf_counter()
source = cache.open_images(paths, int(sys.argv[2]), "disk")
print(len(paths) / (time.perf_counter() - started) / (os.cpu_count() or 1), source.decoded)
"""

_PEAK_RSS = "from bench.peak_memory import peak_rss\n"

_EPOCH = _PEAK_RSS + """
import sys, time
from pathlib import Path
from train.data import cache
from train.data.pipeline import make_datasets
from train.data.scan import scan
folder, size, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
report = scan(folder, 0.25, 42, size)
source = cache.open_images([p for p, _ in report.train + report.val], size, mode)
train, _ = make_datasets(report, source, 64, 42, False)
rates = []
for epoch in range(2):
    started, n = time.perf_counter(), 0
    for batch, _ in train:
        n += int(batch.shape[0])
    rates.append(n / (time.perf_counter() - started))
print(rates[-1], source.mode, peak_rss())
"""

# The alternative the cache replaces: tf.data's own format (Dataset.save / load), read with
# the shuffle buffer a sequential format needs. Same uint8 images, same batch size.
_TFDATA = _PEAK_RSS + """
import sys, tempfile, time
from pathlib import Path
import tensorflow as tf
from train.data import cache
from train.data.scan import scan
folder, size, buffer = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
report = scan(folder, 0.25, 42, size)
source = cache.open_images([p for p, _ in report.train + report.val], size, "disk")
rows = source.rows_of([p for p, _ in report.train])
target = tempfile.mkdtemp(prefix="bench-tfdata-")
images = tf.data.Dataset.from_tensor_slices(rows).batch(256).map(lambda r: tf.numpy_function(source.gather, [r], tf.uint8)).unbatch()
images.save(target)
loaded = tf.data.Dataset.load(target, element_spec=tf.TensorSpec((size, size, 3), tf.uint8))
train = loaded.shuffle(buffer, reshuffle_each_iteration=True).batch(64).prefetch(tf.data.AUTOTUNE)
rates = []
for epoch in range(2):
    started, n = time.perf_counter(), 0
    for batch in train:
        n += int(batch.shape[0])
    rates.append(n / (time.perf_counter() - started))
print(rates[-1], peak_rss())
"""


def decode_rates(folder: Path, image_size: int, sample: int = 200, repeats: int = 3) -> tuple[float, float]:
    """(full, reduced-scale) decodes per second on one core, interleaved and best of `repeats` (the load varies)."""
    from train.data.images import decode_file

    paths = [str(p) for p in sorted(folder.rglob("*.jpg"))[:sample]]
    best = {False: float("inf"), True: float("inf")}
    for _ in range(repeats):
        for reduced in (False, True):
            started = time.perf_counter()
            for path in paths:
                decode_file(path, image_size, reduced_scale=reduced)
            best[reduced] = min(best[reduced], time.perf_counter() - started)
    return len(paths) / best[False], len(paths) / best[True]


def pixel_difference(folder: Path, image_size: int, sample: int = 200) -> tuple[float, int]:
    from train.data.images import decode_file

    paths = sorted(folder.rglob("*.jpg"))[:: max(1, len(list(folder.rglob("*.jpg"))) // sample)][:sample]
    diffs = [np.abs(decode_file(str(p), image_size).astype(int) - decode_file(str(p), image_size, reduced_scale=False).astype(int)) for p in paths]
    return float(np.mean([d.mean() for d in diffs])), int(max(d.max() for d in diffs))


def outside_epochs(folder: Path, env: dict, store: Path) -> tuple[float, float]:
    """(wall seconds of a 1-epoch 64 px training run, seconds outside its epoch)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "train", "--data", str(folder), "--stage", "scratch", "--weights", "none",
                           "--image-size", "64", "--alpha", "0.35", "--epochs", "1", "--batch-size", "64", "--experiment", "bench"],
                          env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}, cwd=store, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    run = mlflow.search_runs(experiment_names=["bench"], order_by=["start_time DESC"], max_results=1).iloc[0]
    history = mlflow.MlflowClient().get_metric_history(run.run_id, "epoch_seconds")
    return wall, wall - sum(m.value for m in history)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated image counts (Food-101 has 101,000)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lrlab-bench-data", help="where the generated folders are kept between runs")
    parser.add_argument("--photo", default="512x384", help="generated photo size, WIDTHxHEIGHT")
    parser.add_argument("--runs", action="store_true", help="also time real training runs (first and second) on the smallest folder")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    PHOTO[:] = [int(side) for side in args.photo.lower().split("x")]
    cache_dir = Path(tempfile.mkdtemp(prefix="bench-data-cache-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LRLAB_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    results = {"image_size": args.image_size, "photo": args.photo, "cores": os.cpu_count(), "load_average": os.getloadavg()[0], "sizes": {}}
    ok = True
    try:
        for n in sizes:
            folder = food_folder(args.workdir, n)
            row = results["sizes"][n] = {}
            first, opened = map(float, _in_subprocess(_SCAN, str(folder), str(args.image_size), env=env).split())
            again, reopened = map(float, _in_subprocess(_SCAN, str(folder), str(args.image_size), env=env).split())
            row["scan_first_s"], row["scan_again_s"], row["scan_speedup"] = first, again, first / again
            ok &= first / again >= 20 and reopened == 0
            print(f"\n{n} images: scan {first:.2f} s first ({opened:.0f} files opened), {again:.3f} s again ({reopened:.0f} opened): {first / again:.0f}x", flush=True)
            rate, decoded = _in_subprocess(_PREPARE, str(folder), str(args.image_size), "1", env=env).split()
            row["prepare_per_core"] = float(rate)
            full, reduced = decode_rates(folder, args.image_size)
            row["decode_per_core_full"], row["decode_per_core_reduced"] = full, reduced
            print(f"  epoch 0 (prepare, {os.cpu_count()} threads): {float(rate):.0f} images/s per core; one core decodes {full:.0f} images/s "
                  f"in full, {reduced:.0f} at reduced scale ({reduced / full:.2f}x)", flush=True)
            for mode in ("auto", "memory", "disk"):
                rate, chosen, rss = _in_subprocess(_EPOCH, str(folder), str(args.image_size), mode, env=env).split()
                row[f"epoch1_{mode}"], row[f"rss_{mode}_mb"], row[f"chosen_{mode}"] = float(rate), int(rss) / 2**20, chosen
                print(f"  cache={mode:<6} ({chosen}): epoch 1 reads {float(rate):,.0f} images/s ({float(rate) / os.cpu_count():,.0f} per core); peak RSS {int(rss) / 2**20:,.0f} MB", flush=True)
            if n <= TFDATA_MAX_IMAGES:
                rate, rss = _in_subprocess(_TFDATA, str(folder), str(args.image_size), "1000", env=env).split()
                row["epoch1_tfdata_save_load"], row["rss_tfdata_save_load_mb"] = float(rate), int(rss) / 2**20
                print(f"  tf.data save/load + shuffle(1000): epoch 1 reads {float(rate):,.0f} images/s; peak RSS {int(rss) / 2**20:,.0f} MB", flush=True)
            row["uint8_mb"] = n * args.image_size ** 2 * 3 / 2**20
            print(f"  uint8 size of the images: {row['uint8_mb']:,.0f} MB", flush=True)
        mean_diff, max_diff = pixel_difference(food_folder(args.workdir, sizes[0]), args.image_size)
        results["reduced_vs_full_mean_abs"], results["reduced_vs_full_max_abs"] = mean_diff, max_diff
        print(f"\nreduced-scale vs full decode at {args.image_size} px: mean |difference| {mean_diff:.2f} grey levels, max {max_diff}")
        if args.runs:
            store = Path(tempfile.mkdtemp(prefix="bench-data-runs-"))
            folder = food_folder(args.workdir, sizes[0])
            for which in ("first", "second"):
                wall, outside = outside_epochs(folder, env, store)
                results[f"run_{which}_outside_s"] = outside
                print(f"{which} run on {sizes[0]} images (64 px, 1 epoch): {wall:.1f} s wall, {outside:.1f} s outside the epoch", flush=True)
        print(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    print(f"(peak RSS of this bench process: {peak_rss() / 2**20:.0f} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
