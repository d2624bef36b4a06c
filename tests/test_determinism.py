"""Same seed, same curve: two CPU runs with `deterministic=true` and the same seed, each in its own
process as a user would start them, log identical per-epoch metrics (TensorFlow's op determinism)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import subprocess_env
from tests.data_fixtures import cache_dir_fixture, random_images  # noqa: F401 - fixture
from train import contract

# Timings differ from run to run by nature; everything else the epoch logs must not.
COMPARED = [name for name in contract.EPOCH_METRICS if name not in (contract.EPOCH_SECONDS, contract.IMAGES_PER_SECOND)]
ARGS = ["--data", "demo", "--stage", "scratch", "--weights", "none", "--image-size", "64", "--alpha", "0.35",
        "--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--seed", "7", "--deterministic", "true"]  # fmt: skip


@pytest.mark.slow
def test_same_seed_and_deterministic_give_identical_metrics(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment(contract.DEFAULT_EXPERIMENT)  # before two processes race to make it
    env = subprocess_env(uri, CUDA_VISIBLE_DEVICES="")  # CPU: the promise tested is the CPU one
    runs = [subprocess.Popen([sys.executable, "-m", "train", *ARGS, "--run-name", f"repeat {i}"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]  # fmt: skip
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name(contract.DEFAULT_EXPERIMENT).experiment_id])
    assert len(found) == 2 and all(run.data.params["deterministic"] == "True" for run in found)
    curves = [{name: [m.value for m in sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)] for name in COMPARED} for run in found]
    assert all(len(values) == 2 for values in curves[0].values())
    assert curves[0] == curves[1]  # exactly: not within a tolerance
    assert curves[0][contract.LOSS][0] != curves[0][contract.LOSS][1]  # the runs trained: the curves are no constant


def test_a_runs_batch_order_does_not_depend_on_what_the_process_seeded_before(tmp_path, cache_dir):
    """A sweep child trains in a process where anything (an earlier child, a notebook's
    keras.utils.set_random_seed) may have set TensorFlow's global seed, which the seeded shuffle
    folds in: the same run seed must give the same batches as a run in a fresh process."""
    import keras

    from train.data.cache import open_report_images
    from train.data.pipeline import make_datasets
    from train.data.scan import scan
    from train.model.seeding import seed_run

    random_images(tmp_path / "data" / "a", 8, 1)
    random_images(tmp_path / "data" / "b", 8, 2)
    report = scan(tmp_path / "data", 0.25, 42, 24)
    images = open_report_images(report, 24, "memory")

    def batch_labels() -> list[list[int]]:
        seed_run(7)
        train, _ = make_datasets(report, images, 4, seed=7, augment=False)
        return [labels.numpy().tolist() for _, labels in train]

    first = batch_labels()
    keras.utils.set_random_seed(3)  # what a notebook or another library may do between two runs
    assert batch_labels() == first
