"""Model factory details that a training run alone would not reveal."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from tests.conftest import tiny_config
from train.models import IMAGENET_STDDEV_RGB, all_layers, auto_bn_momentum, build_model, unfreeze_for_finetune

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)


def test_efficientnet_from_a_weights_file_normalises_like_imagenet(tmp_path):
    """Keras adds the ImageNet std correction only for weights='imagenet'; a file must give the same model."""
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    normalization = next(layer for layer in base.layers if isinstance(layer, layers.Normalization))
    # What Keras' own efficientnetb0_notop.h5 holds: the mean, and the std where the variance belongs.
    normalization.adapt_mean.assign(np.array(IMAGENET_MEAN_RGB, "float32"))
    normalization.adapt_variance.assign(np.array(IMAGENET_STDDEV_RGB, "float32"))
    path = tmp_path / "efficientnetb0_notop.weights.h5"
    base.save_weights(path)

    model = build_model(3, tiny_config(model="efficientnet_b0", stage="full", weights=str(path)), None)
    loaded_base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    loaded_norm = next(layer for layer in loaded_base.layers if isinstance(layer, layers.Normalization))
    probe = keras.Model(loaded_base.input, loaded_norm.output)
    pixels = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3)).astype("float32")
    expected = (pixels / 255 - np.array(IMAGENET_MEAN_RGB)) / np.array(IMAGENET_STDDEV_RGB)
    np.testing.assert_allclose(probe.predict(pixels, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_a_weights_file_for_another_architecture_is_a_clear_error(tmp_path):
    other = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3), alpha=0.35)
    path = tmp_path / "mobilenet.weights.h5"
    other.save_weights(path)
    with pytest.raises(ValueError, match="does not fit efficientnet_b0"):
        build_model(3, tiny_config(model="efficientnet_b0", stage="head", weights=str(path)), None)


@pytest.mark.parametrize(("steps", "momentum"), [(9, 0.9), (100, 0.9), (200, 0.95), (5000, 0.99)])
def test_auto_bn_momentum(steps, momentum):
    assert auto_bn_momentum(steps) == pytest.approx(momentum)


def test_scratch_applies_the_momentum_to_every_batch_norm():
    model = build_model(6, tiny_config(stage="scratch"), 0.9)
    momenta = {layer.momentum for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization)}
    assert momenta == {0.9}


def test_head_freezes_the_base_and_finetune_unfreezes_all_but_batch_norm():
    model = build_model(6, tiny_config(stage="head"), None)
    assert len(model.trainable_weights) == 2  # the Dense kernel and bias
    unfreeze_for_finetune(model)
    bn = [layer for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert len(model.trainable_weights) > 40


def test_models_take_raw_pixels_and_return_float32_probabilities():
    model = build_model(4, tiny_config(stage="full", model="efficientnet_b0"), None)
    out = model.predict(np.full((2, 64, 64, 3), 255.0, "float32"), verbose=0)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-5)
