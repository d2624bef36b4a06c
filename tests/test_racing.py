"""Seeds until decided (sweep/racing.py), fast: the rounds racing picks, on runs logged with log_batch into a
real SQLite store (no training); and once for real, a small sweep with max_repeats (slow)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from sweep import best, racing
from sweep.cli import build_plan
from sweep.plan import Phase, config_key
from train import contract

STUDY = "race"
GRID = {"stage": "scratch", "lr": "1e-2,3e-3,1e-4", "epochs": "2", "data": "demo"}
# best val accuracy per seed index: 3e-3 is best, 1e-2 is close to it (within noise at any n racing can
# afford here), 1e-4 is clearly worse from the first two seeds on.
VALUES = {1e-2: [0.79, 0.81, 0.78, 0.80, 0.79, 0.81], 3e-3: [0.80, 0.81, 0.79, 0.81, 0.80, 0.80], 1e-4: [0.40, 0.42, 0.41, 0.40, 0.41, 0.42]}


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    yield client, client.create_experiment("racing")


def log(client, experiment_id, phase, key, values, accuracy, status="FINISHED", pruned=False):
    """One child as a sweep logs it: its tags, its params as typed values' text, its best val accuracy."""
    run = client.create_run(experiment_id, run_name=phase.label(values))
    tags = {contract.TAG_KIND: contract.KIND_TRAIN, contract.TAG_SWEEP_STUDY: STUDY, contract.TAG_SWEEP_PHASE: phase.name, contract.TAG_SWEEP_CONFIG: key}
    if pruned:
        tags[contract.TAG_PRUNED] = "true"
    client.log_batch(run.info.run_id, metrics=[Metric(contract.BEST_VAL_ACCURACY, accuracy, 0, 0)],
                     params=[Param(name, str(value)) for name, value in values.items()], tags=[RunTag(k, v) for k, v in tags.items()])  # fmt: skip
    client.set_terminated(run.info.run_id, status)


def runs_of(client, experiment_id):
    return client.search_runs([experiment_id], f"tags.{contract.TAG_SWEEP_STUDY} = '{STUDY}'", max_results=1000)


def look(client, experiment_id, arms, max_repeats, margin=0.01):
    runs = runs_of(client, experiment_id)
    run_keys = {run.info.run_id: run.data.tags[contract.TAG_SWEEP_CONFIG] for run in runs}
    return racing.next_round(arms, best.compare(runs, margin), run_keys, set(run_keys.values()), max_repeats)


def train_round(client, experiment_id, phase, work, values=VALUES):
    """What the sweep would train: each (key, values) of the round, at its seed's value."""
    for key, config in work:
        index = config[contract.PARAM_SEED] - 42
        log(client, experiment_id, phase, key, config, values[config[contract.PARAM_LR]][index])


def test_racing_adds_seeds_only_to_undecided_comparisons_and_stops_at_the_cap(store):
    client, experiment_id = store
    plan = build_plan("", dict(GRID), repeats=2, trials=0, max_repeats=4)
    (phase,) = plan.phases
    arms = racing.arms(phase, plan.max_repeats)
    assert [arm.seeds for arm in arms] == [[42, 43, 44, 45]] * 3
    first = [(key, values) for arm in arms for key, values in (arm.work(0), arm.work(1))]
    assert {key for key, _ in first} == {config_key(phase.name, values) for values in phase.configurations()}, \
        "the first round's keys are the grid's own: a sweep that ran without racing resumes into it"
    train_round(client, experiment_id, phase, first)

    second = look(client, experiment_id, arms, plan.max_repeats)
    assert sorted((v[contract.PARAM_LR], v[contract.PARAM_SEED]) for _, v in second.work) == [(3e-3, 44), (1e-2, 44)], "1e-4 is decided: no seed for it"
    assert [line.split(" (")[0] for line in second.undecided] == ["scratch: lr 1e-2 vs lr 3e-3"]
    assert second.decided == ["scratch: lr 1e-4 worse (n 2)"] and not second.capped
    train_round(client, experiment_id, phase, second.work)

    third = look(client, experiment_id, arms, plan.max_repeats)
    assert sorted(v[contract.PARAM_SEED] for _, v in third.work) == [45, 45]
    train_round(client, experiment_id, phase, third.work)

    end = look(client, experiment_id, arms, plan.max_repeats)
    assert end.work == [] and [line.split(" (")[0] for line in end.capped] == ["scratch: lr 1e-2 vs lr 3e-3"]
    assert "n 4 and 4" in end.capped[0]
    counts = {}
    for run in runs_of(client, experiment_id):
        counts[float(run.data.params["lr"])] = counts.get(float(run.data.params["lr"]), 0) + 1
    assert counts == {1e-2: 4, 3e-3: 4, 1e-4: 2}, "10 children where a fixed grid of 4 seeds trains 12"
    lines = racing.closing_lines(phase.name, end, 4, plan.max_repeats)
    assert "1 comparison(s) decided, 1 stopped at the cap (max_repeats 4)" in lines[0]


def test_equivalent_is_decided_and_pruned_or_failed_children_are_not_seeds(store):
    client, experiment_id = store
    plan = build_plan("", {"stage": "scratch", "lr": "3e-3,1e-2", "data": "demo"}, repeats=1, trials=0, max_repeats=3)
    (phase,) = plan.phases
    arms = racing.arms(phase, plan.max_repeats)
    assert [arm.seeds for arm in arms] == [[42, 43, 44]] * 2 and all(contract.PARAM_SEED not in arm.keys[0] for arm in arms)
    same = {3e-3: [0.800, 0.801, 0.802], 1e-2: [0.801, 0.800, 0.802]}
    train_round(client, experiment_id, phase, [arm.work(0) for arm in arms], same)
    one_each = look(client, experiment_id, arms, plan.max_repeats, margin=0.01)
    assert "cannot tell" in one_each.undecided[0] and len(one_each.work) == 2, "one run each: both get a seed"

    key, values = next((k, v) for k, v in one_each.work if v[contract.PARAM_LR] == 1e-2)
    log(client, experiment_id, phase, key, values, 0.95, pruned=True)  # a pruned child: its slot is used, it is no seed
    train_round(client, experiment_id, phase, [w for w in one_each.work if w[0] != key], same)
    after = look(client, experiment_id, arms, plan.max_repeats)
    assert sorted((v[contract.PARAM_LR], v[contract.PARAM_SEED]) for _, v in after.work) == [(3e-3, 44), (1e-2, 44)], \
        "still one run of 1e-2 counts: both get a seed, 1e-2 the next free one (43 went to the pruned child)"

    train_round(client, experiment_id, phase, after.work, same)
    close = look(client, experiment_id, arms, plan.max_repeats, margin=0.01)
    assert close.work == [] and close.decided == ["scratch: lr 3e-3 equivalent (n 3)"], (close.decided, close.undecided, close.capped)  # 1e-2 leads by 0.0005
    assert not np.isnan(plan.margin)


def test_a_later_phase_starts_from_the_decided_best_group_not_the_luckiest_seed(store, monkeypatch):
    """With repeats, the single best run may belong to a configuration that is worse on average."""
    client, experiment_id = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    mlflow.set_tracking_uri(client.tracking_uri)
    plan = build_plan("", {"stage": "scratch", "lr": "3e-3,1e-2", "data": "demo"}, repeats=3, trials=0)
    (phase,) = plan.phases
    lucky = {3e-3: [0.80, 0.81, 0.80], 1e-2: [0.90, 0.50, 0.52]}
    train_round(client, experiment_id, phase, [(k, v) for arm in racing.arms(phase, 3) for k, v in (arm.work(0), arm.work(1), arm.work(2))], lucky)
    with mlflow.start_run(experiment_id=experiment_id):
        runs = best.best_runs(STUDY)
        uri = best.start_model_uri(STUDY, Phase("finetune", init_from={"phase": phase.name}))
    chosen = next(run for run in runs if uri == f"runs:/{run.info.run_id}/model")
    assert float(chosen.data.params["lr"]) == 3e-3 and chosen.data.metrics[contract.BEST_VAL_ACCURACY] == 0.81
    mlflow.set_tracking_uri(None)


@pytest.mark.slow  # trains for real: 3 learning rates x 2 seeds, then the seeds racing adds (at most 3 more)
def test_a_real_sweep_with_max_repeats_adds_seeds_only_to_undecided_comparisons_and_stops_at_the_cap(tracking_uri, capsys):
    from sweep.cli import main

    argv = ["--stages", "scratch", "--lrs", "3e-3,2e-3,1e-9", "--epochs", "1", "--data", "demo", "--image_size", "64", "--alpha", "0.35",
            "--weights", "none", "--batch_size", "16", "--repeats", "2", "--max-repeats", "3", "--experiment", "race"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep: racing seeds: 2 per configuration first, then one more for both groups of every undecided comparison, up to 3: 6 children now, at most 9" in out
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id], f"tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'")
    assert all(run.info.status == "FINISHED" for run in runs)
    by_seed = {seed: [run for run in runs if int(run.data.params["seed"]) == seed] for seed in (42, 43, 44)}
    assert len(by_seed[42]) == len(by_seed[43]) == 3 and len(runs) == 6 + len(by_seed[44]), "no configuration past max_repeats"

    # Replay round 1 from the first round's runs: the seeds 44 the sweep trained are exactly those racing asks for.
    plan = build_plan("", {"stage": "scratch", "lr": "3e-3,2e-3,1e-9", "epochs": "1", "data": "demo", "image_size": "64", "alpha": "0.35",
                           "weights": "none", "batch_size": "16"}, repeats=2, trials=0, max_repeats=3)  # fmt: skip
    first = by_seed[42] + by_seed[43]
    run_keys = {run.info.run_id: run.data.tags[contract.TAG_SWEEP_CONFIG] for run in first}
    wanted = racing.next_round(racing.arms(plan.phases[0], 3), best.compare(first, 0.01), run_keys, set(run_keys.values()), 3)
    assert sorted(v[contract.PARAM_LR] for _, v in wanted.work) == sorted(float(run.data.params["lr"]) for run in by_seed[44])
    assert {run.data.tags[contract.TAG_SWEEP_CONFIG] for run in by_seed[44]} == {key for key, _ in wanted.work}
    assert f"sweep: racing in phase 'train' ended after {len(by_seed[44])} extra seed(s)" in out
    if by_seed[44]:
        assert "sweep: racing round 1 of phase 'train'" in out
    assert "sweep ranking by best validation accuracy" in out and "(one stage: nothing to compare it with)" in out
