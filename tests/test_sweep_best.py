"""Which run of a sweep is "the best": one rule for the run a phase fine-tunes from and the runs the
sweep registers. Real MLflow runs in a SQLite store under tmp_path; no training."""

from __future__ import annotations

import mlflow
import pytest

from sweep import best
from sweep.plan import Phase
from train import contract
from train.config import same_param

STUDY = "study-1"


@pytest.fixture
def sweep_runs(tmp_path, monkeypatch):
    """A sweep parent (active) and three finished head children: the best was pruned."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("sweeps")
    ids = {}
    with mlflow.start_run(run_name="sweep", tags={contract.TAG_KIND: contract.KIND_SWEEP, contract.TAG_SWEEP_STUDY: STUDY}) as parent:
        for name, accuracy, pruned in (("pruned", 0.95, True), ("good", 0.80, False), ("worse", 0.60, False)):
            tags = {contract.TAG_KIND: contract.KIND_TRAIN, contract.TAG_SWEEP_STUDY: STUDY, contract.TAG_SWEEP_PHASE: "head"}
            if pruned:
                tags[contract.TAG_PRUNED] = "true"
            with mlflow.start_run(run_name=name, nested=True, tags=tags) as child:
                mlflow.log_params({contract.PARAM_STAGE: "head", contract.PARAM_LR: "1e-3" if name != "worse" else "1e-4"})
                mlflow.log_metric(contract.BEST_VAL_ACCURACY, accuracy)
                ids[name] = child.info.run_id
        yield ids, parent
    mlflow.set_tracking_uri(None)


def test_a_pruned_run_is_never_the_best(sweep_runs):
    ids, _ = sweep_runs
    assert [run.info.run_id for run in best.best_runs(STUDY)] == [ids["good"], ids["worse"]]
    finetune = Phase("finetune", init_from={"phase": "head"})
    assert best.start_model_uri(STUDY, finetune) == f"runs:/{ids['good']}/{contract.MODEL_ARTIFACT}"
    only_low_lr = Phase("finetune", init_from={"phase": "head", contract.PARAM_LR: 1e-4})
    assert best.start_model_uri(STUDY, only_low_lr) == f"runs:/{ids['worse']}/{contract.MODEL_ARTIFACT}"


@pytest.mark.parametrize(("logged", "wanted", "same"), [("1e-06", 1e-6, True), ("1e-6", "0.000001", True), ("true", True, True),
                                                        ("adam", "Adam", True), ("nan", "nan", True), ("0.1", 0.2, False), (None, "x", False)])  # fmt: skip
def test_a_param_is_compared_by_what_it_says(logged, wanted, same):
    assert same_param(logged, wanted) is same


def test_a_run_is_named_by_what_varies_in_its_phase_in_the_run_and_the_progress_line(capsys):
    from sweep.progress import Progress

    phase = Phase("head", fixed={"epochs": 2}, grid={"lr": [1e-3, 1e-4]}, variants=[{"seed": 1}, {"seed": 2}])
    values = {**phase.fixed, "lr": 1e-3, "seed": 2, "optimizer": "adam"}
    assert phase.label(values) == "head lr=0.001 seed=2"
    Progress(4).done(phase.label(values), 0.5, 3.0)
    printed = capsys.readouterr()
    assert "head lr=0.001 seed=2: best val_accuracy 0.5000" in printed.out + printed.err
