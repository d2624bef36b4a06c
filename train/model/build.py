"""Model factory: one Functional model per stage, preprocessing inside.

Every model takes raw RGB images (float32, 0-255) and returns class probabilities, so the
logged MLflow model needs no preprocessing code at serving time.

    scratch   base with random weights, every layer trains (BatchNormalization in
              training mode, with a momentum suited to the data size; see bn_momentum)
    full      pretrained base + GlobalAveragePooling2D + Dropout + Dense(softmax), all
              layers train, the base called with training=False
    head      the same model with the base frozen: only the new classifier trains
    finetune  an earlier run's model, every layer but BatchNormalization unfrozen
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import keras
from keras import layers

from train.config import ConfigError, TrainConfig
from train.messages import first_line

# EfficientNet's ImageNet weights store the RGB standard deviation where the variance of
# its Normalization layer belongs; Keras corrects that with an extra Rescaling layer, but
# only when it downloads the weights itself (weights="imagenet"). See _load_weights_file.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
MOBILENET_BN_MOMENTUM = 0.999


def build_model(num_classes: int, config: TrainConfig, bn_momentum: float | None) -> keras.Model:
    """A new model for the scratch, full or head stage."""
    size = config.image_size
    inputs = keras.Input(shape=(size, size, 3), name="image")
    base = _base(config)
    if config.model == "mobilenet_v2":
        x = layers.Rescaling(1 / 127.5, offset=-1, name="mobilenet_preprocess")(inputs)
    else:
        x = inputs  # EfficientNet rescales and normalises inside the base
    if config.stage == "scratch":
        if bn_momentum is not None:
            set_bn_momentum(base, bn_momentum)
        x = base(x)
    else:
        base.trainable = config.stage == "full"
        x = base(x, training=False)  # keep BatchNormalization in inference mode when fine-tuning later
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(config.dropout, name="dropout")(x)
    # float32 softmax even under mixed precision: float16 probabilities underflow.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{config.model}_{config.stage}")


def auto_bn_momentum(steps_per_epoch: int) -> float:
    """Momentum whose moving average forgets within a tenth of an epoch, within [0.9, 0.99].

    MobileNetV2's 0.999 averages over ~1000 steps; on a few hundred images the moving
    statistics never catch up and validation sits at chance while training accuracy
    climbs. 1 - 10/steps keeps the window near a tenth of an epoch.
    """
    return min(0.99, max(0.9, 1 - 10 / max(1, steps_per_epoch)))


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    for layer in all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum


def unfreeze_for_finetune(model: keras.Model) -> None:
    """Every layer trains except BatchNormalization, whose statistics stay as learned."""
    model.trainable = True
    for layer in all_layers(model):  # nested models do not pass `trainable` on: set each layer
        layer.trainable = not isinstance(layer, layers.BatchNormalization)


def all_layers(model: keras.Model) -> Iterator[keras.Layer]:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def _base(config: TrainConfig) -> keras.Model:
    size = config.image_size
    weights = None if config.stage == "scratch" or config.weights == "none" else config.weights
    keras_weights = "imagenet" if weights == "imagenet" else None
    if config.model == "mobilenet_v2":
        base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=config.alpha, include_top=False, weights=keras_weights)
    else:
        base = keras.applications.EfficientNetB0(input_shape=(size, size, 3), include_top=False, weights=keras_weights)
    if weights not in (None, "imagenet"):
        _load_weights_file(base, weights, config.model)
    return base


def _load_weights_file(base: keras.Model, path: str, model_name: str) -> None:
    # Keras warns once per layer group it cannot match (a hundred lines for another architecture)
    # before it fails, or loads what matches and keeps the rest random: either way the file does not fit.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            base.load_weights(path)
        except (ValueError, OSError, KeyError) as error:
            raise ConfigError(f"weights file '{path}' does not fit {model_name} (include_top=False): {first_line(error)}; give that model's weights file or -P weights=none") from None
    skipped = [w for w in caught if issubclass(w.category, UserWarning) and str(w.message).startswith("Skipping")]
    if skipped:
        raise ConfigError(f"weights file '{path}' does not fit {model_name} (include_top=False): {len(skipped)} layer groups of it match none of the model's; "
                          "give that model's weights file or -P weights=none")
    for other in caught:
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if model_name == "efficientnet_b0":
        # Same correction Keras makes for downloaded weights: divide once more by sqrt(stddev),
        # folded into the variance, so a file gives exactly the model weights="imagenet" gives.
        normalization = next(layer for layer in base.layers if isinstance(layer, layers.Normalization))
        normalization.adapt_variance.assign(normalization.adapt_variance * keras.ops.convert_to_tensor(IMAGENET_STDDEV_RGB))
        normalization.finalize_state()
