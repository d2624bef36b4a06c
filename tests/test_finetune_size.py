"""Fine-tuning takes image_size from init_model unless it is given, as evaluate does."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_MODEL, copy_store, tiny_config, use_store
from train.config import ConfigError, TrainConfig
from train.run.preflight import preflight

pytestmark = pytest.mark.slow  # the shared tiny model is trained once per session


@pytest.fixture
def tiny_model_store(tmp_path, monkeypatch, tiny_trained_store):
    uri = copy_store(tiny_trained_store.folder, tmp_path)
    monkeypatch.chdir(tmp_path)
    with use_store(uri, monkeypatch):
        yield uri


def test_image_size_comes_from_the_init_model(tiny_model_store, capsys):
    config = tiny_config(stage="finetune", init_model=f"models:/{TINY_MODEL}@scratch", lr=1e-6, image_size=TrainConfig.image_size)
    checked = preflight(config)
    assert config.image_size == 64 and checked.init_run_id
    assert f"image_size: 64, as init_model 'models:/{TINY_MODEL}@scratch' takes" in capsys.readouterr().out


def test_a_given_image_size_that_differs_is_one_line_before_tensorflow(tiny_model_store):
    config = tiny_config(stage="finetune", init_model=f"models:/{TINY_MODEL}@scratch", lr=1e-6, image_size=96)
    with pytest.raises(ConfigError, match=r"takes 64x64 images \(got image_size=96\); set image_size=64 or leave it out"):
        preflight(config)
