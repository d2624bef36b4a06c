"""Learning-rate schedules: a linear warm-up per batch, then per-epoch formulas.

    warm-up       the first W = warmup_epochs epochs ramp linearly per batch, from
                  lr / (W * steps_per_epoch) at the first batch to lr at the last batch of
                  epoch W-1 (Goyal et al. 2017); the schedule then starts at its own epoch 0,
                  so it runs over epochs - W epochs.
    constant      lr
    exponential   lr * exp(-decay * e), e = min(epoch, decay_epochs) when decay_epochs > 0
    step          lr * drop ** floor(epoch / epochs_drop), or lr * drop ** (milestones
                  passed), milestones counted in absolute epochs
    cosine        lr * (1 + cos(pi * epoch / epochs)) / 2

A per-epoch ramp (`lr * (epoch + 1) / W`) would make `warmup_epochs=1` a no-op: epoch 0
would already run at the full rate. So `BatchSchedule` (train/run/batch_schedule.py, a Keras
callback, kept apart so that the dashboard's synthetic runs use these formulas without
loading TensorFlow) sets the rate before every batch; after the warm-up the rate changes
only at epoch boundaries, and the callback writes it only then. The per-epoch
`learning_rate` metric is the mean of the rates the epoch's batches used
(`learning_rate_at`): during warm-up the middle of the epoch's ramp, afterwards the
epoch's rate itself.
"""

from __future__ import annotations

import bisect
import math

from train.config import TrainConfig


def rate_at_step(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """The rate batch `step` (counted from 0 over the whole run) trains with."""
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return config.lr * (step + 1) / warmup_steps
    return _after_warmup(step // steps_per_epoch - config.warmup_epochs, config)


def learning_rate_at(epoch: int, config: TrainConfig, steps_per_epoch: int = 1) -> float:
    """The logged `learning_rate` of `epoch`: the mean rate of its batches.

    `steps_per_epoch` matters only during warm-up; afterwards every batch of an epoch has
    the same rate."""
    if epoch >= config.warmup_epochs:
        return _after_warmup(epoch - config.warmup_epochs, config)
    first = epoch * steps_per_epoch
    return config.lr * (first + (steps_per_epoch + 1) / 2) / (config.warmup_epochs * steps_per_epoch)


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
