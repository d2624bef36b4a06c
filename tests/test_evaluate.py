"""`python -m train.tools.evaluate`: its numbers are the Keras model's, its run links the model's run.

The tests evaluate the session's tiny model (tests/conftest.py's tiny_trained_store: 64 px, alpha
0.35, one epoch, registered; trained once per pytest process, not here) in this module's copy of its
store, through the command line on the demo data and on a train/val folder, and recompute every
logged number from mlflow.keras.load_model's own predictions.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_MODEL, copy_store, error_line, subprocess_env, use_store
from train import contract
from train.tools.evaluate import main, metrics_of, per_class_table


@pytest.fixture(scope="module")
def trained(tiny_trained_store, tmp_path_factory):
    """The session's tiny registered model (run_id, version), in this module's copy of its store."""
    folder = tmp_path_factory.mktemp("evaluate-store")
    uri = copy_store(tiny_trained_store.folder, folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        with use_store(uri, patch):
            yield tiny_trained_store


def _evaluate_runs(extra_filter: str = "") -> list:
    client = MlflowClient()  # the module's store (use_store), whatever MLFLOW_TRACKING_URI a test sets
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.{contract.TAG_KIND} = '{contract.KIND_EVALUATE}'{extra_filter}")


def _images(folder: Path, class_names: list[str]) -> tuple[list[str], np.ndarray]:
    """Every image of the folder's class sub-folders, sorted, with its index in the model's classes."""
    paths, labels = [], []
    for name in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        for path in sorted(p for p in (folder / name).iterdir() if p.is_file() and p.stat().st_size > 0):
            paths.append(str(path))
            labels.append(class_names.index(name))
    return paths, np.array(labels)


def _keras_probabilities(model_uri: str, paths: list[str], image_size: int) -> np.ndarray:
    """The Keras model's own predictions on images decoded as training decodes them."""
    import tensorflow as tf

    from train.data.pipeline import decode_image

    model = mlflow.keras.load_model(model_uri)
    images = np.stack([decode_image(tf.constant(path), image_size).numpy() for path in paths])
    return model.predict(images, verbose=0)


@pytest.fixture(scope="module")
def demo_evaluation(trained):
    """`python -m train.tools.evaluate --model-uri runs:/ID/model --data demo`, in this process."""
    code = main(["--model-uri", f"runs:/{trained.run_id}/model", "--data", "demo", "--experiment", "evaluations"])
    assert code == 0
    runs = _evaluate_runs(" and params.data = 'demo'")
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow  # trains for real
def test_accuracy_and_per_class_metrics_match_the_keras_model(trained, demo_evaluation):
    from train.data.demo import demo_folder

    model_uri = f"runs:/{trained.run_id}/model"
    class_names = json.loads(mlflow.artifacts.load_text(f"runs:/{trained.run_id}/{contract.CLASS_NAMES_FILE}"))
    paths, labels = _images(demo_folder() / "test", class_names)  # demo has a held-out test/
    probabilities = _keras_probabilities(model_uri, paths, 64)
    predicted = probabilities.argmax(axis=1)

    metrics = demo_evaluation.data.metrics
    assert metrics[contract.EVAL_ACCURACY] == pytest.approx(float((predicted == labels).mean()), abs=1e-6)
    for index, (name, suffix) in enumerate(zip(class_names, contract.class_metric_suffixes(class_names), strict=True)):
        recall = float((predicted[labels == index] == index).mean())
        assert metrics[contract.EVAL_RECALL_PREFIX + suffix] == pytest.approx(recall, abs=1e-6), name
        if (predicted == index).any():
            precision = float((labels[predicted == index] == index).mean())
            assert metrics[contract.EVAL_PRECISION_PREFIX + suffix] == pytest.approx(precision, abs=1e-6), name
        else:  # never predicted: precision is undefined, so not logged (not a made-up 0)
            assert contract.EVAL_PRECISION_PREFIX + suffix not in metrics, name

    # Image by image: the same files, the same classes, the same probabilities.
    rows = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{demo_evaluation.info.run_id}/{contract.EVAL_PREDICTIONS_FILE}"))
    assert sorted(rows["path"]) == sorted(paths)
    expected = dict(zip(paths, zip(labels, predicted, probabilities.max(axis=1), strict=True), strict=True))
    for path, label, guess, probability in rows[["path", "label", "predicted", "probability"]].itertuples(index=False):
        true_index, predicted_index, top = expected[path]
        assert (label, guess) == (class_names[true_index], class_names[predicted_index]), path
        assert probability == pytest.approx(top, abs=1e-5), path


@pytest.mark.slow  # trains for real
def test_run_is_tagged_and_links_the_models_run(trained, demo_evaluation):
    run = demo_evaluation
    assert run.data.tags[contract.TAG_KIND] == contract.KIND_EVALUATE
    assert run.data.tags[contract.TAG_EVALUATED_RUN_ID] == trained.run_id
    assert run.data.params[contract.PARAM_MODEL_URI] == f"runs:/{trained.run_id}/model"
    assert run.data.params[contract.PARAM_DATA] == "demo"
    assert run.data.params["split"] == "test"
    assert run.data.params["evaluated_images"] == "60"
    assert run.info.run_name == f"evaluate runs:/{trained.run_id}/model on demo"
    assert run.info.status == "FINISHED"
    assert MlflowClient().get_experiment(run.info.experiment_id).name == "evaluations"
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    assert {contract.EVALUATION_FILE, contract.EVAL_CONFUSION_MATRIX_FILE, contract.EVAL_PREDICTIONS_FILE} <= artifacts
    summary = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{contract.EVALUATION_FILE}"))
    assert summary["accuracy"] == run.data.metrics[contract.EVAL_ACCURACY]
    assert summary["includes_training_images"] is False  # demo/test/ is held out of training
    counts = np.array(summary["confusion_matrix"]["counts"])
    assert counts.sum() == 60 and counts.sum(axis=1).tolist() == [10] * 6
    assert [row["images"] for row in summary["per_class"]] == [10] * 6
    # MLflow 3 links the metrics to the logged model and the data set too (the UI's model page).
    model_id = mlflow.models.get_model_info(f"runs:/{trained.run_id}/model").model_id
    linked = {m.key for m in MlflowClient().get_logged_model(model_id).metrics if m.run_id == run.info.run_id}
    assert contract.EVAL_ACCURACY in linked
    assert run.inputs.dataset_inputs, "the evaluated images are logged as a run input"


@pytest.mark.slow  # trains for real
def test_registered_alias_on_a_val_folder_under_mlflow_run(trained, tmp_path, monkeypatch, capsys):
    """models:/NAME@ALIAS; train/ + val/ evaluates val/ only; a class subset; a broken file; MLFLOW_RUN_ID."""
    from train.data.demo import demo_folder

    data = tmp_path / "shapes"
    for split, classes in (("train", ("circle", "ring", "square")), ("val", ("circle", "ring"))):
        for name in classes:
            (data / split / name).mkdir(parents=True)
            for source in sorted((demo_folder() / "train" / name).glob("*.png"))[:3]:
                shutil.copy(source, data / split / name / source.name)
    (data / "val" / "ring" / "broken.png").write_bytes(b"")
    client = MlflowClient()
    started = client.create_run(client.get_experiment_by_name("evaluations").experiment_id)  # as `mlflow run` does
    monkeypatch.setenv("MLFLOW_RUN_ID", started.info.run_id)

    model_uri = f"models:/{TINY_MODEL}@scratch"
    assert main(["--model-uri", model_uri, "--data", str(data), "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    run = client.get_run(started.info.run_id)
    assert run.data.tags[contract.TAG_KIND] == contract.KIND_EVALUATE
    assert run.data.tags[contract.TAG_EVALUATED_RUN_ID] == trained.run_id
    assert run.data.params["split"] == "val"
    assert run.data.params["evaluated_images"] == "6"
    assert run.data.params["skipped_files"] == "1"
    assert run.info.run_name == f"evaluate models:/{TINY_MODEL}@scratch on shapes/val"

    class_names = json.loads(mlflow.artifacts.load_text(f"runs:/{trained.run_id}/{contract.CLASS_NAMES_FILE}"))
    paths, labels = _images(data / "val", class_names)
    predicted = _keras_probabilities(model_uri, paths, 64).argmax(axis=1)
    assert run.data.metrics[contract.EVAL_ACCURACY] == pytest.approx(float((predicted == labels).mean()), abs=1e-6)
    recalls = {key for key in run.data.metrics if key.startswith(contract.EVAL_RECALL_PREFIX)}
    assert recalls == {"recall_circle", "recall_ring"}, "recall only for classes the folder has"
    assert "no images of 'cross', 'square', 'stripes', 'triangle'" in out
    assert "optimistic" not in out, "val/ is held out: no training-images note"
    summary = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{contract.EVALUATION_FILE}"))
    assert summary["model_version"] == str(trained.version)
    assert [s["reason"] for s in summary["skipped"]] == ["empty file (0 bytes)"]


def test_per_class_table_and_metric_names():
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 1])
    names = ["red fox", "red/fox", "owl"]
    accuracy, rows, matrix = per_class_table(labels, predicted, names)
    assert accuracy == pytest.approx(3 / 5)
    assert matrix == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert metrics_of(accuracy, rows) == pytest.approx({
        "accuracy": 0.6,
        "precision_red_fox": 1.0, "recall_red_fox": 0.5,
        "precision_red_fox_2": 0.5, "recall_red_fox_2": 1.0,
        "recall_owl": 0.0,  # owl is never predicted: no precision_owl
    })
    assert contract.class_metric_suffixes(["a b", "a_b", "a:b", "größe", ""]) == ["a_b", "a_b_2", "a_b_3", "größe", "class"]


@pytest.fixture
def wrong_classes(tmp_path):
    folder = tmp_path / "fruit"
    for name in ("circle", "apple"):
        (folder / name).mkdir(parents=True)
    return folder


BAD_INPUTS = [
    ("unknown_run", r"error: model 'runs:/0123456789abcdef/model' does not resolve: .*"),
    ("unknown_name", r"error: model 'models:/no-such-model@champion' does not resolve: .*"),
    ("missing_folder", r"error: data folder '.*/missing' does not exist; .*"),
    ("wrong_classes", r"error: class folder 'apple' in '.*/fruit' is not a class of model 'runs:/\w+/model' \(its classes: 'circle', .*\); rename or remove it"),
    ("image_size", r"error: model 'runs:/\w+/model' takes 64x64 images \(got image-size 96\); use --image-size auto"),
    ("bad_image_size", r"error: image-size must be 'auto' .* \(got 'big'\)"),
    ("store_down", r"error: tracking server http://127.0.0.1:9 does not answer .*"),
    ("no_model_uri", r"error: Missing option '--model-uri'.*"),
]


@pytest.mark.slow  # trains for real
@pytest.mark.parametrize(("case", "expected"), BAD_INPUTS, ids=[case for case, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_no_run(case, expected, trained, wrong_classes, tmp_path, monkeypatch, capsys):
    model = f"runs:/{trained.run_id}/model"
    args = {
        "unknown_run": ["--model-uri", "runs:/0123456789abcdef/model"],
        "unknown_name": ["--model-uri", "models:/no-such-model@champion"],
        "missing_folder": ["--model-uri", model, "--data", str(tmp_path / "missing")],
        "wrong_classes": ["--model-uri", model, "--data", str(wrong_classes)],
        "image_size": ["--model-uri", model, "--image-size", "96"],
        "bad_image_size": ["--model-uri", model, "--image-size", "big"],
        "store_down": ["--model-uri", model],
        "no_model_uri": [],
    }[case]
    runs_before = len(_evaluate_runs())
    if case == "store_down":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert main(args) == 2
    assert re.fullmatch(expected, error_line(capsys.readouterr().err)), case
    monkeypatch.undo()
    assert len(_evaluate_runs()) == runs_before


@pytest.mark.parametrize("uri", ["http://example.invalid/model", "s3://bucket/model", "mlflow-artifacts:/1/model"])
def test_a_model_uri_outside_the_tracking_store_is_one_line(tracking_uri, uri, capsys):
    assert main(["--model-uri", uri]) == 2
    assert error_line(capsys.readouterr().err) == (f"error: model '{uri}' is not a model in the tracking store; give runs:/RUN_ID/model, "
                                                   "models:/NAME@ALIAS or models:/NAME/VERSION (log or register the model there first)")


def test_bad_input_fails_within_seconds_from_the_command_line(tracking_uri, tmp_path):
    """`python -m train.tools.evaluate` with bad input stops before TensorFlow loads."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "train.tools.evaluate", "--model-uri", "runs:/0123456789abcdef/model", "--data", str(tmp_path / "missing")],
        cwd=tmp_path, env=subprocess_env(tracking_uri, PYTHONPROFILEIMPORTTIME="1"), capture_output=True, text=True, timeout=300,
    )
    # What the process imported (Python's own import log), not a stopwatch a loaded machine breaks.
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    said = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
    assert done.returncode == 2, said
    assert re.fullmatch(r"error: data folder '.*missing' does not exist; .*", error_line(said))
    assert "train.tools" in imported and not {name for name in imported if name.split(".")[0] in ("tensorflow", "keras")}


@pytest.mark.slow  # trains for real
def test_a_folder_named_like_mathtext_is_evaluated_and_drawn_as_plain_text(trained, tmp_path):
    """The figure's title carries the folder's name: '$\\undefined$' must not reach matplotlib's mathtext."""
    from train.data.demo import demo_folder

    data = tmp_path / "$\\undefined$"
    for name in ("circle", "ring"):
        (data / name).mkdir(parents=True)
        for source in sorted((demo_folder() / "train" / name).glob("*.png"))[:2]:
            shutil.copy(source, data / name / source.name)
    assert main(["--model-uri", f"runs:/{trained.run_id}/model", "--data", str(data), "--batch-size", "4"]) == 0
    run = max(_evaluate_runs(), key=lambda found: found.info.start_time)
    assert run.info.run_name.endswith("$\\undefined$")
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    assert contract.EVAL_CONFUSION_MATRIX_FILE in artifacts
