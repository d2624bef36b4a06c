"""train/model/fused_adam.py: Keras's Adam with its update as one TensorFlow op per variable."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from train.model import fused_adam


def _model():
    # No BatchNormalization after a biased layer: that bias's gradient is rounding noise, which Adam
    # scales up to whole steps, so any two correct implementations part ways on it.
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


def _data():
    rng = np.random.default_rng(0)
    return rng.random((64, 8)).astype("float32"), rng.integers(0, 3, 64)


def _trained(optimizer):
    model = _model()
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*_data(), batch_size=16, epochs=3, verbose=0, shuffle=False)
    return model


def test_the_private_keras_members_it_replaces_and_reads_still_exist():
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(_model().trainable_variables)
    missing = [name for name in fused_adam.KERAS_PRIVATE_MEMBERS if not hasattr(optimizer, name)]
    assert not missing, f"Keras {keras.__version__} changed what train/model/fused_adam.py relies on: {missing}"


def test_the_fused_update_trains_as_keras_adam_does():
    ours, theirs = _trained(fused_adam.fuse(keras.optimizers.Adam(1e-2))), _trained(keras.optimizers.Adam(1e-2))
    assert int(ours.optimizer.iterations) == int(theirs.optimizer.iterations) == 12
    for mine, keras_own in zip(ours.weights + ours.optimizer.variables, theirs.weights + theirs.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(keras_own), rtol=1e-4, atol=1e-5, err_msg=mine.path)


def _step_ops(optimizer) -> list[str]:
    model = _model()
    optimizer.build(model.trainable_variables)
    x, y = _data()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), from_logits=True)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    return [op.type for op in step.get_concrete_function(x, y).graph.get_operations()]


def test_the_step_traces_one_update_op_per_variable_and_far_fewer_ops():
    fused, keras_own = _step_ops(fused_adam.fuse(keras.optimizers.Adam(1e-3))), _step_ops(keras.optimizers.Adam(1e-3))
    assert fused.count("ResourceApplyAdam") == len(_model().trainable_variables) and "ResourceApplyAdam" not in keras_own
    assert len(fused) < 0.6 * len(keras_own), (len(fused), len(keras_own))


def test_a_saved_model_loads_anywhere_as_a_plain_keras_adam(tmp_path):
    model = _trained(fused_adam.fuse(keras.optimizers.Adam(1e-2)))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is keras.optimizers.Adam and "_backend_update_step" not in vars(loaded.optimizer)
    assert int(loaded.optimizer.iterations) == 12


@pytest.mark.parametrize("optimizer", [keras.optimizers.Adam(amsgrad=True), keras.optimizers.Adam(weight_decay=0.01), keras.optimizers.SGD()])
def test_what_it_cannot_fuse_keeps_keras_own_update(optimizer):
    assert "_backend_update_step" not in vars(fused_adam.fuse(optimizer))


def test_under_mixed_precision_the_loss_scaled_update_is_fused_and_matches_too():
    """A GPU run with mixed_precision on wraps the Adam in Keras's LossScaleOptimizer (float32 variables, float16 compute)."""
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        ours = _trained(keras.optimizers.LossScaleOptimizer(fused_adam.fuse(keras.optimizers.Adam(1e-2))))
        theirs = _trained(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2)))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert "_backend_update_step" in vars(ours.optimizer.inner_optimizer)
    for mine, keras_own in zip(ours.weights, theirs.weights, strict=True):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(keras_own), rtol=1e-3, atol=1e-4, err_msg=mine.path)


def _variables_made_in_traces(work) -> list[str]:
    """The names of the variables `work()` creates inside a tf.function's trace."""
    import tensorflow as tf

    made = []

    def note(next_creator, **kwargs):
        if tf.inside_function():
            made.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(note):
        work()
    return made


def test_training_builds_the_optimizer_before_fit_and_trains_exactly_as_a_lazily_built_one():
    """train/run/trainer.py's compile_for creates the optimizer's and the accuracy metric's variables
    eagerly (a variable made inside fit()'s first trace costs seconds, and makes TensorFlow trace the
    whole step twice); fit must then create no variable of its own, and the weights it reaches must be
    the ones it reaches when Keras builds the optimizer and the metric itself."""
    from tests.conftest import tiny_config
    from train.run.trainer import compile_for, optimizer_for

    config = tiny_config(lr=1e-2)
    eager, lazy = _model(), _model()
    compile_for(eager, config, accuracy=True)
    lazy.compile(optimizer=optimizer_for(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert not lazy.optimizer.built
    slots = list(eager.optimizer.variables)
    assert len(slots) == 2 + 2 * len(eager.trainable_variables)  # iterations, learning rate, m and v per weight
    made_in_trace = {model: _variables_made_in_traces(lambda m=model: m.fit(*_data(), batch_size=16, epochs=3, verbose=0, shuffle=False)) for model in (eager, lazy)}
    assert [v.path for v in eager.optimizer.variables] == [v.path for v in slots], "fit built the optimizer again"
    assert made_in_trace[eager] == [], "fit made variables inside its trace"
    assert made_in_trace[lazy], "Keras's own way (a lazily built optimizer, metrics=['accuracy']) makes them there"
    assert eager.get_metrics_result().keys() == lazy.get_metrics_result().keys() == {"loss", "accuracy"}
    for mine, keras_built in zip(eager.weights + eager.optimizer.variables, lazy.weights + lazy.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(keras_built), err_msg=mine.path)
