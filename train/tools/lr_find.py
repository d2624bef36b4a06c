"""`python -m train.tools.lr_find`: Smith's learning-rate range test, logged as a kind=lr_find run.

The model the training parameters describe trains for up to `steps` batches while the
learning rate grows exponentially from `min_lr` to `max_lr`; the batch loss is smoothed
(exponential moving average, bias-corrected) and the test stops once the smoothed loss
exceeds `diverge` x its minimum. The weights are restored afterwards.

The suggested learning rate (metric `suggested_lr`) follows one stated rule:
- `steepest` (default): where the smoothed loss falls fastest against log10(lr), in the
  decade below the lr of its minimum (and after the first 10 % of the steps, whose moving
  average is still settling). Searched over the whole curve, the rule picked noise: the demo
  data's loss stays flat from 1e-6 to 1e-3, and its steepest wiggle there was at 4.3e-5;
- `minimum`: the lr of the lowest smoothed loss, divided by 10.
On the demo data (scratch, 64 px, 100 steps) the smoothed loss is nearly flat and lowest at
2.5e-3; steepest says 1.6e-3 and minimum/10 2.5e-4, while the best of a 1e-4/1e-3/3e-3/1e-2
grid after 3 epochs is 1e-2: small data favours high rates, so both are cautious starts, and
the curve's minimum is the closer guide there.
Both values are logged (`lr_steepest`, `lr_min_loss_div10`) so the two rules can be compared.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import click
import numpy as np

from train import contract
from train.cli import config_options
from train.config import ConfigError, TrainConfig

SMOOTHING = 0.98
MIN_SKIP = 10  # the first smoothed points still carry the moving average's start-up noise
# steepest looks no further below the minimum's lr than this factor (one decade): on a curve
# that stays flat for decades, the steepest point of its noise could lie anywhere (4e-5 on the demo data).
STEEPEST_WITHIN_FACTOR = 10


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]  # raw batch losses
    smoothed: list[float]
    steepest: float
    min_loss_div10: float

    def suggestion(self, rule: str) -> float:
        return self.steepest if rule == "steepest" else self.min_loss_div10


def range_test(model, dataset, min_lr: float, max_lr: float, steps: int, diverge: float = 4.0) -> RangeTest:
    """Train batch by batch with an exponentially growing lr; restore the weights afterwards."""
    weights = model.get_weights()
    factor = (max_lr / min_lr) ** (1 / max(steps - 1, 1))
    lrs, losses, smoothed = [], [], []
    average, lowest = 0.0, math.inf
    try:
        for step, (images, labels) in enumerate(dataset.repeat().take(steps)):
            lr = min_lr * factor**step
            model.optimizer.learning_rate.assign(lr)
            loss = float(model.train_on_batch(images, labels, return_dict=True)["loss"])
            if not math.isfinite(loss):
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            value = average / (1 - SMOOTHING ** (step + 1))
            lrs.append(lr), losses.append(loss), smoothed.append(value)
            lowest = min(lowest, value)
            if step > MIN_SKIP and value > diverge * lowest:
                break
    finally:
        model.set_weights(weights)
    if len(lrs) < MIN_SKIP + 3:
        raise ConfigError(f"lr_find: the loss diverged after {len(lrs)} steps; lower min_lr (got {min_lr:g})")
    return RangeTest(lrs, losses, smoothed, *suggestions(lrs, smoothed))


def suggestions(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(steepest descent in the decade below the minimum, lr at the minimum / 10)."""
    losses = np.asarray(smoothed)
    skip = max(MIN_SKIP, len(losses) // 10)
    lowest = int(np.argmin(losses[skip:])) + skip
    slope = np.gradient(losses, np.log10(lrs))
    start = max(skip, int(np.searchsorted(lrs, lrs[lowest] / STEEPEST_WITHIN_FACTOR)))
    window = slope[start : lowest + 1]
    steepest = lrs[start + int(np.argmin(window))] if window.size else lrs[lowest]
    return float(steepest), float(lrs[lowest] / 10)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--min-lr", default=1e-7, show_default=True, type=float, help="Learning rate of the first step.")
@click.option("--max-lr", default=1.0, show_default=True, type=float, help="Learning rate of the last step.")
@click.option("--steps", default=200, show_default=True, type=int, help="Batches at most (the data repeats if it has fewer).")
@click.option("--diverge", default=4.0, show_default=True, type=float, help="Stop once the smoothed loss exceeds this multiple of its minimum.")
@click.option("--rule", default="steepest", show_default=True, type=click.Choice(["steepest", "minimum"]), help="How suggested_lr is chosen: steepest descent of the smoothed loss, or the minimum's lr / 10.")
@config_options
def command(min_lr, max_lr, steps, diverge, rule, **values) -> None:
    """Learning-rate range test: which lr to try first, logged as a kind=lr_find run."""
    if not (0 < min_lr < max_lr):
        raise ConfigError(f"need 0 < min_lr < max_lr (got {min_lr:g}, {max_lr:g})")
    if steps < 20:
        raise ConfigError(f"steps must be at least 20 (got {steps}); try 200")
    if diverge <= 1:
        raise ConfigError(f"diverge must be above 1 (got {diverge:g}); try 4")
    from train.run.preflight import preflight

    config = TrainConfig(**values)
    checked = preflight(config)
    result = run_lr_find(config, checked, min_lr, max_lr, steps, diverge, rule)
    print(f"suggested lr: {result.suggestion(rule):.2g} ({rule}); steepest {result.steepest:.2g}, minimum/10 {result.min_loss_div10:.2g}", flush=True)


def run_lr_find(config: TrainConfig, checked, min_lr: float, max_lr: float, steps: int, diverge: float, rule: str) -> RangeTest:
    import mlflow
    from mlflow.entities import Metric

    from train.data.pipeline import make_datasets
    from train.model.device import set_up_devices
    from train.model.seeding import seed_run
    from train.run.trainer import bn_momentum_for, compile_for, model_for
    from train.tracking import runs as tracking

    devices = set_up_devices(config)
    seed_run(config.seed)
    train_data, _ = make_datasets(checked.report, checked.images, config.batch_size, config.seed, config.augment)
    with devices.strategy.scope():
        model = model_for(config, checked.report, bn_momentum_for(config, len(checked.report.train)))  # as training builds it
        compile_for(model, config)
    with mlflow.start_run(run_name=f"lr_find {config.stage}", tags={contract.TAG_KIND: contract.KIND_LR_FIND}) as run:
        params = {**config.as_params(), "min_lr": min_lr, "max_lr": max_lr, "steps": steps, "diverge": diverge, "rule": rule}
        params["bn_momentum_used"] = ",".join(f"{m:g}" for m in _bn_momenta(model)) if config.stage == "scratch" else "not trained"
        tracking.log_params_once({key: str(value) for key, value in params.items() if key not in ("lr", "epochs", "resume")})
        if checked.init_run_id:
            mlflow.set_tag(contract.TAG_INIT_RUN_ID, checked.init_run_id)
        started = time.perf_counter()
        result = range_test(model, train_data, min_lr, max_lr, steps, diverge)
        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for step, (lr, loss, smooth) in enumerate(zip(result.lrs, result.losses, result.smoothed, strict=True))
                   for name, value in ((contract.LR_FIND_LR, lr), (contract.LR_FIND_BATCH_LOSS, loss), (contract.LR_FIND_LOSS, smooth))]
        client = mlflow.tracking.MlflowClient()
        for start in range(0, len(metrics), contract.LOG_BATCH_MAX):
            client.log_batch(run.info.run_id, metrics=metrics[start : start + contract.LOG_BATCH_MAX])
        mlflow.log_metrics({contract.SUGGESTED_LR: result.suggestion(rule), contract.LR_STEEPEST: result.steepest,
                            contract.LR_MIN_LOSS_DIV10: result.min_loss_div10, contract.LR_FIND_SECONDS: time.perf_counter() - started})
    return result


def _bn_momenta(model) -> list[float]:
    """The momenta the model's BatchNormalization layers really have (the logged value is read, not assumed)."""
    from keras import layers

    from train.model.build import all_layers

    return sorted({float(layer.momentum) for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization)})


def main(argv: list[str] | None = None) -> int:
    from train.cli import main as train_main

    return train_main(argv, command=command, prog_name="python -m train.tools.lr_find")


if __name__ == "__main__":
    sys.exit(main())
