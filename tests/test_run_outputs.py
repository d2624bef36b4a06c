"""What a run leaves behind besides its metrics: the model, the confusion matrix (figure and
data), and a store that starts in milliseconds.

One real run trains once, on the demo images under class folders whose names hold `$`
(mathtext would read '$\\undefined$' as a formula and crash the figure after training);
the tests read what it logged.
"""

from __future__ import annotations

import json
import shutil

import keras
import matplotlib.cbook
import matplotlib.text
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import tiny_config
from train import contract
from train.run.confusion import CELL_TEXT_MAX_CLASSES, confusion_matrix, confusion_matrix_figure, most_confused

# Demo class -> the folder name it trains under: math-looking, unbalanced and unknown-command dollars.
DOLLAR_NAMES = {"circle": "circle $x^2$", "cross": "$\\undefined$ cross", "ring": "ring $5", "square": "square", "stripes": "stripes $$", "triangle": "tri$an$gle"}


class KeepModel(keras.callbacks.Callback):
    """Keeps the trained Keras model that fit() ran (train() returns only the run's summary)."""


@pytest.fixture(scope="module")
def dollar_run(store, tmp_path_factory):
    from train.data.demo import demo_folder
    from train.run.preflight import preflight
    from train.run.trainer import train

    folder = tmp_path_factory.mktemp("dollar-classes")
    for demo, name in DOLLAR_NAMES.items():
        shutil.copytree(demo_folder() / "train" / demo, folder / name)
    config = tiny_config(data=str(folder), epochs=2, lr=3e-3, batch_size=16)
    checked = preflight(config)
    keeper = KeepModel()
    result = train(config, checked, callbacks=[keeper])
    return checked.report, result, keeper.model


def _val_images(report) -> tuple[np.ndarray, np.ndarray]:
    """The validation images decoded as training decodes them, float32 0-255, and their labels."""
    from train.data.images import decode_file

    images = np.stack([decode_file(path, 64) for path, _ in report.val]).astype(np.float32)
    return images, np.array([label for _, label in report.val])


@pytest.mark.slow
def test_dollar_class_names_train_and_log_the_model(dollar_run):
    report, result, _ = dollar_run
    assert report.class_names == sorted(DOLLAR_NAMES.values())
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id)}
    assert {contract.CONFUSION_MATRIX_FILE, contract.CONFUSION_MATRIX_DATA_FILE} <= artifacts
    logged = mlflow.search_logged_models(filter_string=f"source_run_id = '{result.run_id}'", output_format="list")
    assert [model.name for model in logged] == [contract.MODEL_ARTIFACT] and result.model_uri == f"models:/{logged[0].model_id}"


@pytest.mark.slow
def test_logged_model_predicts_the_trained_models_probabilities(dollar_run):
    report, result, trained = dollar_run
    images, _ = _val_images(report)
    expected = trained.predict(images, verbose=0)
    uri = f"runs:/{result.run_id}/{contract.MODEL_ARTIFACT}"
    pyfunc = mlflow.pyfunc.load_model(uri)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(images)), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mlflow.keras.load_model(uri).predict(images, verbose=0), expected, rtol=1e-4, atol=1e-6)
    signature = pyfunc.metadata.signature
    assert signature.inputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 64, 64, 3)}
    assert signature.outputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, len(DOLLAR_NAMES))}


@pytest.mark.slow
def test_logged_serving_example_predicts_like_keras(dollar_run):
    """log_model's own serving check is skipped (5-10 s a run): the example it would have served must work."""
    _, result, trained = dollar_run
    folder = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/{contract.MODEL_ARTIFACT}")
    serving = json.loads(open(f"{folder}/serving_input_example.json").read())
    example = np.asarray(serving["inputs"], dtype=np.float32)
    assert example.shape == (1, 64, 64, 3) and example.max() > 1, "one raw 0-255 image"
    pyfunc = mlflow.pyfunc.load_model(folder)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(example)), trained.predict(example, verbose=0), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_confusion_matrix_data_matches_the_models_predictions(dollar_run):
    report, result, trained = dollar_run
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/{contract.CONFUSION_MATRIX_DATA_FILE}"))
    assert logged["class_names"] == report.class_names
    assert (logged["rows"], logged["columns"]) == ("true class", "predicted class")
    images, labels = _val_images(report)
    probabilities = trained.predict(images, verbose=0)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    decided = top_two[:, 1] - top_two[:, 0] > 1e-5  # an exact tie may go either way in another kernel
    counts = np.array(logged["counts"])
    assert counts.sum(axis=1).tolist() == np.bincount(labels, minlength=len(report.class_names)).tolist()
    expected = confusion_matrix(labels, probabilities.argmax(axis=1), len(report.class_names))
    assert np.abs(counts - expected).sum() <= 2 * (~decided).sum(), (counts, expected)
    assert logged["most_confused"] == most_confused(counts, report.class_names)
    png = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/{contract.CONFUSION_MATRIX_FILE}")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_many_classes_draw_a_heat_map_with_the_most_confused_pairs(tmp_path):
    classes = 101
    names = [f"food ${index}$" if index % 10 == 0 else f"food {index}" for index in range(classes)]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, 3000)
    predicted = np.where(rng.random(3000) < 0.6, labels, rng.integers(0, classes, 3000))
    predicted[:40] = 7  # 40 more images of assorted classes called 'food 7'
    labels[:20] = 30
    matrix = confusion_matrix(labels, predicted, classes)
    figure = confusion_matrix_figure(labels, predicted, names)
    assert len(figure.axes[0].texts) == 0, "no count in each cell beyond CELL_TEXT_MAX_CLASSES"
    listing = " ".join(text.get_text() for axes in figure.axes[1:] for text in axes.texts)
    assert "food $30$" in listing.replace("\\$", "$") and f"food 7: {matrix[30, 7]}" in listing
    figure.savefig(tmp_path / "matrix.png")  # dollars drawn as text, not parsed as math
    assert figure.get_size_inches()[0] < 20, "the figure does not grow with the class count"
    pairs = most_confused(matrix, names)
    assert pairs[0] == {"true": "food $30$", "predicted": "food 7", "count": int(matrix[30, 7])} and matrix[30, 7] >= 20
    assert [pair["count"] for pair in pairs] == sorted((pair["count"] for pair in pairs), reverse=True)


def test_few_classes_count_every_cell_and_draw_dollar_names_as_text(tmp_path):
    names = sorted(DOLLAR_NAMES.values())
    labels = np.array([0, 1, 2, 3, 4, 5, 5])
    predicted = np.array([0, 1, 2, 3, 4, 4, 5])
    figure = confusion_matrix_figure(labels, predicted, names)
    assert len(names) <= CELL_TEXT_MAX_CLASSES and len(figure.axes[0].texts) == len(names) ** 2
    figure.savefig(tmp_path / "matrix.png")
    drawn = {label.get_text().replace("\\$", "$") for label in figure.axes[0].get_yticklabels()}
    assert drawn == set(names)
    assert not any(matplotlib.cbook.is_math_text(text.get_text()) for text in figure.findobj(matplotlib.text.Text))


def test_new_sqlite_store_is_copied_from_an_empty_one(tmp_path, monkeypatch):
    """A second new store starts from the template: its tables exist, and the Default
    experiment points into the new store's own folder, not the template's."""
    from train.tracking import store as tracking_store

    monkeypatch.setenv("LRLAB_CACHE", str(tmp_path / "cache"))
    previous = mlflow.get_tracking_uri()
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        tracking_store.connect(f"copied-{name}")
        with mlflow.start_run() as run:
            mlflow.log_metric("loss", 1.0, step=0)
        client = MlflowClient(uri)
        assert client.get_run(run.info.run_id).data.metrics == {"loss": 1.0}
        assert client.get_experiment("0").artifact_location.startswith(str(folder))
    assert list((tmp_path / "cache" / "stores").glob("empty-mlflow-*.db")), "the template is kept for the next store"
    mlflow.set_tracking_uri(previous)
