"""Which runs of a sweep are "the best": the run a later phase fine-tunes from, the runs the sweep
registers and evaluates on the held-out test split, and the verdicts of its closing summary.

One rule throughout: the best *group* (configuration, over its seeds) by app/analysis/stats.py,
then that group's best run. With repeats, the single luckiest seed of a configuration that is
worse on average no longer wins. Pruned runs never count: stopped early, their best is not that
of a whole run.
"""

from __future__ import annotations

import hashlib
import math
import sys
from typing import TYPE_CHECKING

import mlflow

from sweep.filters import quoted
from train import contract
from train.config import ConfigError, same_param

if TYPE_CHECKING:
    from sweep.plan import Phase


def experiment_ids() -> list[str]:
    """A sweep lives in its parent's experiment: the same plan in another experiment is another sweep."""
    return [mlflow.active_run().info.experiment_id]


def sweep_runs(study: str, extra_filter: str = "", finished: bool = True) -> list:
    """The sweep's training runs (matching `extra_filter`), best validation accuracy first."""
    filters = [f"tags.{contract.TAG_SWEEP_STUDY} = {quoted(study)}", f"tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'",
               "attributes.status = 'FINISHED'" if finished else "", extra_filter]  # fmt: skip
    return mlflow.search_runs(experiment_ids=experiment_ids(), filter_string=" AND ".join(f for f in filters if f),
                              order_by=[f"metrics.{contract.BEST_VAL_ACCURACY} DESC"], output_format="list")  # fmt: skip


def best_runs(study: str, extra_filter: str = "") -> list:
    """FINISHED, not pruned, with a best_val_accuracy: best first."""
    return [run for run in sweep_runs(study, extra_filter) if contract.BEST_VAL_ACCURACY in run.data.metrics and run.data.tags.get(contract.TAG_PRUNED) != "true"]


def run_values(runs):
    """The rows app/analysis/stats.py compares, from MLflow `Run`s."""
    import pandas as pd

    return pd.DataFrame([{
        "run_id": run.info.run_id, "run_name": run.info.run_name or run.info.run_id[:8],
        "stage": run.data.params.get(contract.PARAM_STAGE, ""), "model": run.data.params.get(contract.PARAM_MODEL, ""),
        "status": run.info.status, "pruned": run.data.tags.get(contract.TAG_PRUNED) == "true",
        "params": dict(run.data.params), "value": run.data.metrics.get(contract.BEST_VAL_ACCURACY, math.nan),
        "test_accuracy": run.data.metrics.get(contract.TEST_ACCURACY, math.nan),
    } for run in runs], columns=["run_id", "run_name", "stage", "model", "status", "pruned", "params", "value", "test_accuracy"])  # fmt: skip


def compare(runs, margin: float):
    from app.analysis import stats  # numpy, scipy and pandas only: no dashboard

    return stats.compare(run_values(runs), margin=margin)


def best_of_groups(runs: list, margin: float, per_stage: bool = False) -> list:
    """The best run of the best group (per stage and model with `per_stage`, else the single best
    group of all): `runs` best first, as `best_runs` gives them."""
    from app.analysis import stats

    if not runs:
        return []
    comparison = compare(runs, margin)
    bests = comparison.table.index[comparison.table["verdict"] == stats.BEST]
    if len(bests) == 0:
        return runs[:1]
    sign = 1.0 if comparison.statistic.higher_is_better else -1.0
    ordered = sorted(bests, key=lambda i: (-sign * comparison.table.loc[i, "mean"], -comparison.table.loc[i, "n"]))
    chosen = []
    for index in ordered if per_stage else ordered[:1]:
        members = set(comparison.details.loc[index, "run_ids"])
        chosen.append(next(run for run in runs if run.info.run_id in members))  # runs come best first
    return chosen


def describe_group(run, runs: list, margin: float) -> str:
    """'lr 3e-3: mean 0.801 over 3 seeds' for the group `run` belongs to."""
    comparison = compare(runs, margin)
    for index, ids in comparison.details["run_ids"].items():
        if run.info.run_id in ids:
            row = comparison.table.loc[index]
            return f"{row['group']}: mean {row['mean']:.4f} over {row['n']} seed(s)"
    return "its group"


def register(study: str, register_as: str, margin: float, claims) -> dict[str, int]:
    """Register each stage's best (alias = stage) and alias the best of all `champion`; once per
    set of runs however many workers end the sweep (a claim)."""
    from sweep.claims import DONE
    from train.tracking import runs as tracking

    runs = best_runs(study)
    if not runs:
        print("sweep: no finished run to register", file=sys.stderr, flush=True)
        return {}
    best_per_stage: dict[str, mlflow.entities.Run] = {}
    for run in best_of_groups(runs, margin, per_stage=True):  # the best group's best run, the best stage first
        best_per_stage.setdefault(run.data.params.get(contract.PARAM_STAGE, "model"), run)
    if not claims.claim(_ticket("register", best_per_stage.values())):  # another worker registers this same set
        return {}
    registered = {stage: tracking.register(tracking.model_uri_of_run(run.info.run_id), register_as, stage) for stage, run in best_per_stage.items()}
    registered[contract.CHAMPION_ALIAS] = registered[next(iter(best_per_stage))]
    tracking.move_alias(register_as, contract.CHAMPION_ALIAS, registered[contract.CHAMPION_ALIAS])  # says so when champion gets worse
    claims.finish(_ticket("register", best_per_stage.values()), DONE)
    for alias, version in registered.items():
        print(f"sweep: registered models:/{register_as}@{alias} (version {version})", flush=True)
    return registered


def evaluate_on_test(study: str, margin: float, claims) -> None:
    """Each stage's best evaluated once on its data's held-out test/ split, when it has one: a number
    on images nothing was trained on or selected by. Once per sweep however many workers end it
    (a claim), and never twice per run (train.tools.evaluate.evaluate_on_test)."""
    from sweep.claims import DONE
    from train.config import ConfigError

    chosen = best_of_groups(best_runs(study), margin, per_stage=True)
    if not chosen or not claims.claim(_ticket("test", chosen)):
        return
    from train.tools.evaluate import evaluate_on_test as evaluate

    try:
        for run in chosen:
            try:
                evaluate(run.info.run_id, run.data.params.get(contract.PARAM_DATA, "demo"))
            except ConfigError as error:  # the folder changed since training, say: the sweep's own results stand
                print(f"sweep: {run.info.run_name} not evaluated on test: {error}", file=sys.stderr, flush=True)
    finally:
        claims.finish(_ticket("test", chosen), DONE)


def _ticket(what: str, runs) -> str:
    return f"{what}-" + hashlib.sha256(",".join(sorted(run.info.run_id for run in runs)).encode()).hexdigest()[:12]


def start_model_uri(study: str, phase: Phase, margin: float = contract.DEFAULT_MARGIN) -> str:
    """runs:/ID/model of the best run of the best group (over its seeds) of the phase named in
    init_from (and its filters): with racing, the decided best."""
    source = dict(phase.init_from)
    source_phase = source.pop("phase")
    runs = [run for run in best_runs(study, f"tags.{contract.TAG_SWEEP_PHASE} = {quoted(source_phase)}") if all(same_param(run.data.params.get(k), v, k) for k, v in source.items())]
    if not runs:
        wanted = ", ".join(f"{k}={v}" for k, v in source.items()) or "any"
        raise ConfigError(f"phase '{phase.name}' fine-tunes the best run of phase '{source_phase}' ({wanted}) but none FINISHED")
    (chosen,) = best_of_groups(runs, margin)
    print(f"sweep: phase '{phase.name}' starts from run {chosen.info.run_id} ({chosen.info.run_name}, best_val_accuracy "
          f"{chosen.data.metrics[contract.BEST_VAL_ACCURACY]:.4f}; best group {describe_group(chosen, runs, margin)})", flush=True)
    return f"runs:/{chosen.info.run_id}/{contract.MODEL_ARTIFACT}"
