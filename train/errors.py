"""The exceptions training, evaluation and sweeps share, each with what the run becomes."""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """A parameter the user gave is wrong; the message names it and says what to do."""


class TrainingInterrupted(BaseException):
    """SIGTERM or SIGINT stopped training; the run is KILLED and can be resumed.

    A BaseException, like KeyboardInterrupt: a sweep raises it from its signal handler, anywhere,
    and libraries that catch Exception would turn it into an error of their own (MLflow wraps
    whatever is raised inside its SQL sessions as an MlflowException)."""

    def __init__(self, signum: int, epoch: int | None):
        where = f"during epoch {epoch}" if epoch is not None else "between runs"
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}")
        self.signum = signum
        self.epoch = epoch


class TrainingError(RuntimeError):
    """Training ran but gave no usable model (the loss became NaN, say); the run is FAILED."""
