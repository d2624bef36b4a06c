"""Per-epoch learning-rate schedules, as plain functions of the epoch index.

Keras' `LearningRateScheduler` callback applies them: it needs an optimizer with a float
learning rate (it refuses a `LearningRateSchedule`) and a function that returns a Python
float, which is what `learning_rate_at` is. Per-epoch values are what the labs define and
what the dashboard plots, so the formula here is exactly the logged `learning_rate`.

    constant      lr
    exponential   lr * exp(-decay * e), e = min(epoch, decay_epochs) when decay_epochs > 0
    step          lr * drop ** floor(epoch / epochs_drop), or lr * drop ** (milestones
                  passed), milestones counted in absolute epochs
    cosine        lr * (1 + cos(pi * epoch / epochs)) / 2
    warm-up       epochs 0..W-1 ramp linearly to lr: lr * (epoch + 1) / W; the schedule
                  then starts at its own epoch 0, so it runs over epochs - W epochs.
"""

from __future__ import annotations

import bisect
import math

from train.config import TrainConfig


def learning_rate_at(epoch: int, config: TrainConfig) -> float:
    warmup = config.warmup_epochs
    if epoch < warmup:
        return config.lr * (epoch + 1) / warmup
    return _after_warmup(epoch - warmup, config)


def _after_warmup(epoch: int, config: TrainConfig) -> float:
    if config.schedule == "constant":
        return float(config.lr)
    if config.schedule == "exponential":
        decaying_epochs = min(epoch, config.decay_epochs) if config.decay_epochs > 0 else epoch
        return config.lr * math.exp(-config.decay * decaying_epochs)
    if config.schedule == "step":
        milestones = config.milestone_epochs
        # Milestones name absolute epochs ("x0.1 at 40 and 60"), warm-up included.
        drops = bisect.bisect_right(milestones, epoch + config.warmup_epochs) if milestones else epoch // config.epochs_drop
        return config.lr * config.drop**drops
    if config.schedule == "cosine":
        span = max(1, config.epochs - config.warmup_epochs)
        return config.lr * (1 + math.cos(math.pi * epoch / span)) / 2
    raise ValueError(f"schedule must be one of constant, exponential, step, cosine (got '{config.schedule}')")


def schedule_function(config: TrainConfig):
    """The callable `keras.callbacks.LearningRateScheduler` takes: (epoch, current lr) -> float."""
    return lambda epoch, current_lr: learning_rate_at(epoch, config)
