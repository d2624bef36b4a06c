"""Adam's update as one fused TensorFlow op per variable, for a trace that costs half as much.

Keras 3's Adam builds its update out of some 25 small TensorFlow ops per variable (casts,
powers, square roots, three reads and assigns, each under the strategy's update wrapper):
for MobileNetV2 that is 17,000 of the 28,000 ops of the training step, and tracing them is
most of a run's first epoch on a CPU (a cProfile of the first `fit` at 64 px, alpha 0.35: 27.8 s,
against 12.9 s with SGD, whose update is two ops a variable; `bench/bench_trace.py` measures it
beside Keras's Adam).
TensorFlow has the whole update as one kernel, `ResourceApplyAdam`, with the same formula
(lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t); m, v, then var -= lr_t * m / (sqrt(v) + eps)).

`fuse(optimizer)` routes a plain Keras Adam's update there. The optimizer stays a
`keras.optimizers.Adam` (its class, config, variables and saved form are unchanged, so a
logged model loads anywhere without lrlab); only this instance's `_backend_update_step`, a
private Keras hook, is replaced. Under a distribution strategy, with amsgrad or weight
decay, or on another backend the update stays Keras's own.
"""

from __future__ import annotations

import types

import keras

# The private Keras members this relies on; tests/test_fused_adam.py fails, naming this module,
# when a Keras upgrade renames them (and checks the fused update against Keras's own).
KERAS_PRIVATE_MEMBERS = ("_backend_update_step", "_get_variable_index", "_momentums", "_velocities")


def fuse(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer`, its update fused when it is a plain TensorFlow-backend Adam."""
    if type(optimizer) is keras.optimizers.Adam and keras.backend.backend() == "tensorflow" and not optimizer.amsgrad and not optimizer.weight_decay:
        optimizer._backend_update_step = types.MethodType(_fused_update_step, optimizer)
    return optimizer


def _fused_update_step(self, grads, trainable_variables, learning_rate):
    import tensorflow as tf

    if tf.distribute.has_strategy():  # mirrored variables: Keras's per-replica update handles them
        return type(self)._backend_update_step(self, grads, trainable_variables, learning_rate)
    local_step = tf.cast(self.iterations + 1, "float32")
    beta_1_power = tf.pow(tf.constant(self.beta_1, "float32"), local_step)  # once a step, not once a variable
    beta_2_power = tf.pow(tf.constant(self.beta_2, "float32"), local_step)
    for grad, variable in zip(grads, trainable_variables, strict=True):
        index = self._get_variable_index(variable)
        dtype = variable.dtype

        def cast(value, dtype=dtype):
            return tf.cast(value, dtype)

        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            beta1_power=cast(beta_1_power), beta2_power=cast(beta_2_power), lr=cast(learning_rate),
            beta1=cast(self.beta_1), beta2=cast(self.beta_2), epsilon=cast(self.epsilon), grad=cast(grad), use_locking=False)


def _handle(variable):
    """The TensorFlow resource behind a Keras variable."""
    return getattr(variable, "value", variable).handle
