"""Synthetic runs written through MLflow's real client, for tests, the benchmark and demos.

The curves look like training: accuracy rises faster and higher near a good learning rate
for each stage, too large a rate diverges, validation trails train by a gap that grows
with the rate. Every run is logged with `MlflowClient.log_batch` under the contract's
names, exactly as training logs them (params as text, step = epoch).
"""

from __future__ import annotations

import math
import time
import zlib

import click
import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from app.data import histories, store
from train import contract
from train.config import TrainConfig
from train.run.schedules import learning_rate_at

# The log10 learning rate each stage likes best, and the accuracy it reaches there.
BEST_LOG_LR = {"scratch": -3.0, "full": -4.0, "head": -3.0, "finetune": -5.0}
CEILING = {"scratch": 0.72, "full": 0.93, "head": 0.86, "finetune": 0.95}
STEP = 1000  # metric timestamps: one epoch per second of fake time
LOG_BATCH_MAX = 1000  # MLflow's limit on metrics in one log_batch
SYNTHETIC_STEPS_PER_EPOCH = 12  # batches per fake epoch (the warm-up ramp's logged mean depends on it)


def learning_rates(lr: float, schedule: str, epochs: int, warmup: int = 0, steps_per_epoch: int = SYNTHETIC_STEPS_PER_EPOCH) -> list[float]:
    """The per-epoch `learning_rate` training would log: train/run/schedules.py's formulas at their defaults."""
    config = TrainConfig(lr=lr, schedule=schedule, epochs=epochs, warmup_epochs=warmup)
    return [learning_rate_at(epoch, config, steps_per_epoch) for epoch in range(epochs)]


def history(lr: float, stage: str, epochs: int, seed: int = 0, schedule: str = "constant", start_accuracy: float | None = None) -> dict[str, list[float]]:
    """Per-epoch values of the contract's metrics for one believable run."""
    rng = np.random.default_rng(zlib.crc32(f"{lr:g} {stage} {seed} {schedule}".encode()))
    distance = math.log10(lr) - BEST_LOG_LR.get(stage, -3.0)
    quality = math.exp(-(distance**2) / 2.0)
    diverges = distance > 1.6
    ceiling = CEILING.get(stage, 0.8)
    start = start_accuracy if start_accuracy is not None else 0.2
    final = start + (ceiling - start) * (0.45 + 0.55 * quality)
    speed = 0.08 + 0.45 * quality
    epoch = np.arange(epochs)
    val = start + (final - start) * (1 - np.exp(-speed * (epoch + 1)))
    if diverges:
        val = 0.2 + 0.05 * np.exp(-epoch / 3)
    val = np.clip(val + rng.normal(0, 0.012, epochs), 0.01, 0.995)
    gap = (0.01 + 0.06 * max(0.0, distance + 1.0)) * (1 - np.exp(-epoch / 6))
    train = np.clip(val + gap + rng.normal(0, 0.006, epochs), 0.01, 0.999)
    loss = -np.log(train * 0.97 + 0.01) * 1.3
    val_loss = -np.log(val * 0.97 + 0.01) * 1.3 + np.clip(gap, 0, None) * 2.0
    if diverges:
        loss = loss + 0.3 * epoch
        val_loss = val_loss + 0.35 * epoch
    return {
        contract.LOSS: loss.tolist(),
        contract.ACCURACY: train.tolist(),
        contract.VAL_LOSS: val_loss.tolist(),
        contract.VAL_ACCURACY: val.tolist(),
        contract.LEARNING_RATE: learning_rates(lr, schedule, epochs),
        contract.EPOCH_SECONDS: (12 + rng.normal(0, 0.4, epochs)).tolist(),
        contract.IMAGES_PER_SECOND: (850 + rng.normal(0, 15, epochs)).tolist(),
    }


def summary_metrics(values: dict[str, list[float]]) -> dict[str, float]:
    """What training logs once at its end (`contract.SUMMARY_METRICS`, as train/run/trainer.py's
    `_summarise`): best val accuracy, its epoch, the train accuracy there, epochs, median images/s."""
    val = values.get(contract.VAL_ACCURACY) or []
    if not val:
        return {}
    best = int(np.nanargmax(val))
    found = {contract.BEST_VAL_ACCURACY: float(val[best]), contract.BEST_EPOCH: float(best), contract.EPOCHS_TRAINED: float(len(val))}
    if len(values.get(contract.ACCURACY) or []) > best:
        found[contract.ACCURACY_AT_BEST] = float(values[contract.ACCURACY][best])
    if values.get(contract.IMAGES_PER_SECOND):
        found[contract.MEDIAN_IMAGES_PER_SECOND] = float(np.median(values[contract.IMAGES_PER_SECOND]))
    return found


def log_run(
    client: MlflowClient,
    experiment_id: str,
    *,
    name: str,
    params: dict[str, str],
    values: dict[str, list[float]],
    tags: dict[str, str] | None = None,
    status: str = "FINISHED",
    start_ms: int | None = None,
    summary: bool = True,
    parent_run_id: str = "",
) -> str:
    """One run through the real client: params, tags, per-epoch metrics (step = epoch), summary."""
    start_ms = start_ms if start_ms is not None else int(time.time() * 1000)
    all_tags = {contract.TAG_KIND: contract.KIND_TRAIN, **(tags or {})}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = client.create_run(experiment_id, start_time=start_ms, tags={MLFLOW_RUN_NAME: name, **all_tags}, run_name=name)
    run_id = run.info.run_id
    metrics = [
        Metric(key, float(value), start_ms + (epoch + 1) * STEP, epoch)
        for key, series in values.items()
        for epoch, value in enumerate(series)
    ]
    if summary and status == "FINISHED":
        end = start_ms + (max((len(series) for series in values.values()), default=0) + 1) * STEP
        metrics += [Metric(key, value, end, 0) for key, value in summary_metrics(values).items()]
    params_list = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, max(len(metrics), 1), LOG_BATCH_MAX):
        client.log_batch(run_id, metrics=metrics[i : i + LOG_BATCH_MAX], params=params_list if i == 0 else [], tags=[])
    if status != "RUNNING":
        epochs = max((len(series) for series in values.values()), default=0)
        client.set_terminated(run_id, status=status, end_time=start_ms + (epochs + 1) * STEP)
    return run_id


def params_for(
    lr: float, stage: str, *, model: str = "mobilenet_v2", schedule: str = "constant", seed: int = 42, epochs: int = 20, data: str = "demo", init_model: str = "", num_classes: int = 6
) -> dict[str, str]:
    """The contract's params as training logs them (text)."""
    return {
        contract.PARAM_LR: f"{lr:g}",
        "epochs": str(epochs),
        "batch_size": "32",
        contract.PARAM_DATA: data,
        "val_split": "0.2",
        "image_size": "224",
        contract.PARAM_MODEL: model,
        "alpha": "1.0",
        contract.PARAM_STAGE: stage,
        "weights": "none" if stage == "scratch" else "imagenet",
        contract.PARAM_INIT_MODEL: init_model,
        contract.PARAM_SCHEDULE: schedule,
        "optimizer": "adam",
        contract.PARAM_SEED: str(seed),
        contract.PARAM_NUM_CLASSES: str(num_classes),  # training logs it from the data (the demo set has 6)
    }


def fill_lab(client: MlflowClient, experiment: str = contract.DEFAULT_EXPERIMENT, *, epochs: int = 20, seeds=(1, 2)) -> dict[str, list[str]]:
    """The labs of the design: scratch and full at several rates, head then finetune from each
    head run, a schedule comparison, repeats over seeds and one lr-finder run. Returns run ids by stage."""
    experiment_id = _experiment(client, experiment)
    now = int(time.time() * 1000) - 3_600_000
    ids: dict[str, list[str]] = {stage: [] for stage in (*contract.STAGES, "schedule", contract.KIND_LR_FIND)}
    grid = {"scratch": (1e-2, 1e-3, 1e-4), "full": (1e-3, 1e-4, 1e-5), "head": (1e-2, 1e-3, 1e-4)}
    for stage, rates in grid.items():
        for lr in rates:
            for seed in seeds:
                run_id = log_run(client, experiment_id, name=f"{stage} lr={lr:g}", params=params_for(lr, stage, seed=seed, epochs=epochs), values=history(lr, stage, epochs, seed), start_ms=now)
                ids[stage].append(run_id)
    head_best = [run_id for run_id in ids["head"] if client.get_run(run_id).data.params[contract.PARAM_LR] == "0.001"]
    for head_id in head_best:
        head_final = client.get_metric_history(head_id, contract.VAL_ACCURACY)[-1].value
        seed = client.get_run(head_id).data.params[contract.PARAM_SEED]
        for lr in (1e-5, 1e-6):
            run_id = log_run(
                client, experiment_id, name=f"finetune lr={lr:g}",
                params=params_for(lr, "finetune", seed=int(seed), epochs=epochs // 2, init_model=f"runs:/{head_id}/model"),
                values=history(lr, "finetune", epochs // 2, int(seed), start_accuracy=head_final),
                tags={contract.TAG_INIT_RUN_ID: head_id}, start_ms=now,
            )  # fmt: skip
            ids["finetune"].append(run_id)
    for schedule in ("exponential", "step", "cosine"):
        lr = 1e-3
        ids["schedule"].append(
            log_run(client, experiment_id, name=f"full lr={lr:g} {schedule}", params=params_for(lr, "full", schedule=schedule, epochs=epochs), values=history(lr, "full", epochs, 7, schedule), start_ms=now)
        )
    ids[contract.KIND_LR_FIND].append(log_lr_find(client, experiment_id, start_ms=now))
    return ids


def log_lr_find(client: MlflowClient, experiment_id: str, *, steps: int = 60, start_ms: int | None = None) -> str:
    """An lr-finder run: loss against an exponentially growing rate, and the suggested rate."""
    rates = np.logspace(-7, 0, steps)
    loss = 2.3 - 1.4 / (1 + np.exp(-(np.log10(rates) + 4.5) * 2.2)) + np.where(rates > 0.02, (np.log10(rates) + 1.7) ** 2 * 3, 0)
    values = {histories.LR_FIND_LOSS: loss.tolist(), histories.LR_FIND_LR: rates.tolist()}
    run_id = log_run(client, experiment_id, name="lr_find full", params=params_for(1e-7, "full"), values=values, tags={contract.TAG_KIND: contract.KIND_LR_FIND}, start_ms=start_ms, summary=False)
    client.log_metric(run_id, histories.SUGGESTED_LR, 3e-4)
    return run_id


def _experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


@click.command(name="python -m app.data.synthetic", help="Fill a tracking store with the synthetic lab runs: a store to try the dashboard on without training.")
@click.argument("uri", required=False, default=None)
@click.option("--experiment", default=contract.DEFAULT_EXPERIMENT, show_default=True, help="Experiment to log the runs to.")
@click.option("--epochs", type=click.IntRange(min=1, max=10_000), default=30, show_default=True, help="Epochs per run.")
def main(uri: str | None, experiment: str, epochs: int) -> None:
    """`python -m app.data.synthetic sqlite:///demo.db` (URI default: MLFLOW_TRACKING_URI or the contract's)."""
    uri = uri or contract.tracking_uri()
    ids = fill_lab(MlflowClient(tracking_uri=uri), experiment, epochs=epochs)
    click.echo(f"logged {sum(len(v) for v in ids.values())} synthetic runs to {store.display_uri(uri)} (experiment {experiment})")


if __name__ == "__main__":
    main()
