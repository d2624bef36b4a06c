"""One compiled model kept across a sweep's children, so Keras traces its steps once.

Keras traces a new model's train and test steps during its first epoch: on 2 CPU cores at
96 px (the demo data, batch 16) the first epoch took 15.1 s against 1.8 s for the next
ones, and a sweep paid that for every child, pruned ones included. A child whose graph
would be the same as the previous child's (same architecture, stage, compile options,
input and device set-up; see `graph_key`) trains the previous child's model object
instead, whose traced functions Keras keeps: its first epoch takes 1.8 s too.

The child still builds and compiles its own model first, seeded as a run of its own would
be; every variable of that fresh model (weights, BatchNormalization statistics, the
dropout seed states) and its optimizer's initial state are copied into the kept model. So
the kept model starts exactly where the fresh one would: the same seed gives the same
curve, reused or not (tests/test_model_pool.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

# Parameters that change only the values a run starts from or the rates it is fed, never
# the traced graph (the learning rate is an optimizer variable that BatchSchedule assigns,
# the seed and the weights only change the starting values that `ModelPool.take` copies):
# the TrainConfig fields marked traced=False. Every other parameter is part of the key, so
# one added later is safe by default.
from train.config import VALUE_ONLY_PARAMS  # train.config loads no TensorFlow

if TYPE_CHECKING:  # a sweep makes its pool before TensorFlow loads
    import keras

    from train.config import TrainConfig


def graph_key(config: TrainConfig, **built_from) -> tuple:
    """What decides a run's traced graph: the parameters outside VALUE_ONLY_PARAMS plus what was
    derived from the data and devices (`built_from`: classes, BatchNormalization momentum,
    the input's element spec, the device description)."""
    params = {name: value for name, value in config.as_params().items() if name not in VALUE_ONLY_PARAMS}
    return tuple(sorted({**params, **{name: str(value) for name, value in built_from.items()}}.items()))


class ModelPool:
    """Keeps the last child's compiled model for the next child with the same graph.

    `take` lends the kept model out (reset to the fresh model's state) or hands back the fresh
    one; `keep` takes a model back once its fit() has returned. A run that fails mid-fit
    never returns its model, so no child inherits Keras state a broken fit() left behind.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model: keras.Model | None = None
        self._strategy = None
        self._inference: tuple | None = None  # (model, its traced inference step)
        self.reused = 0  # children that trained a kept model (tests and benchmarks read it)

    def take(self, key: tuple, fresh: keras.Model, strategy) -> keras.Model:
        """The kept model set to `fresh`'s state when their graphs match, else `fresh`."""
        kept, same = self._model, key == self._key and strategy is self._strategy
        self._key = self._model = self._strategy = None  # lent out until keep()
        if kept is not None and same and _copy_state(fresh, kept):
            self.reused += 1
            return kept  # with its inference step
        self._inference = None
        return fresh

    def keep(self, key: tuple, model: keras.Model, strategy) -> None:
        self._key, self._model, self._strategy = key, model, strategy

    def inference_step(self, model: keras.Model, input_spec):
        """`model(batch, training=False)` as one traced function with a free batch size (so
        the last, partial batch needs no retrace), traced once per kept model, not per child."""
        if self._inference is None or self._inference[0] is not model:
            import tensorflow as tf

            signature = [tf.TensorSpec((None, *input_spec.shape[1:]), input_spec.dtype)]
            self._inference = (model, tf.function(lambda batch: model(batch, training=False), input_signature=signature, autograph=False))
        return self._inference[1]

    def release(self) -> None:
        self._key = self._model = self._strategy = self._inference = None


def _copy_state(source: keras.Model, target: keras.Model) -> bool:
    """Assign source's variables and fresh optimizer state to target; False (nothing changed)
    when the two do not line up variable for variable (then the fresh model is used)."""
    if target.optimizer is None or not target.optimizer.built or type(source.optimizer) is not type(target.optimizer):
        return False
    source.optimizer.build(source.trainable_variables)  # the slots a fresh run starts from
    groups = ((source.variables, target.variables), (source.optimizer.variables, target.optimizer.variables))
    if any(len(values) != len(variables) for values, variables in groups):
        return False
    pairs = [pair for values, variables in groups for pair in zip(values, variables, strict=True)]
    if any(value.shape != variable.shape or value.dtype != variable.dtype for value, variable in pairs):
        return False
    for value, variable in pairs:
        variable.assign(value)
    return True
