"""One training run: the trainer, its callbacks and schedules, preflight checks, stopping and resuming, the confusion matrix."""
