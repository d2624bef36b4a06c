"""Each param's role is written once, as TrainConfig metadata, and every list of "which params are
the experiment" derives from it; params as logged, in any spelling, type back to one configuration."""

from __future__ import annotations

import dataclasses

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.app_fixtures import store_template  # noqa: F401  (fixture)
from train import config, contract
from train.config import ConfigError, TrainConfig
from train.model import pool
from train.run import resume


def test_every_field_has_one_role_and_only_known_stages_schedules_and_models():
    for spec in dataclasses.fields(TrainConfig):
        meta = spec.metadata
        assert meta["role"] in config.ROLES, spec.name
        assert set(meta["stages"] or ()) <= set(contract.STAGES), spec.name
        assert set(meta["schedules"] or ()) <= set(contract.SCHEDULES), spec.name
        assert set(meta["models"] or ()) <= set(contract.MODELS), spec.name
        assert not meta["unless"] or meta["unless"] in config.CONFIG_FIELDS, spec.name
    assert set(config.REPEAT_PARAMS) == {contract.PARAM_SEED, contract.PARAM_INIT_MODEL}
    assert {"run_name", "resume", "experiment", "register_as", "cache", "deterministic"} == set(config.BOOKKEEPING_PARAMS)
    assert set(config.CONFIGURATION_PARAMS) | set(config.REPEAT_PARAMS) | set(config.BOOKKEEPING_PARAMS) == config.CONFIG_FIELDS


def test_the_model_pool_key_reads_the_same_value_only_params_it_always_had():
    """Derived from `traced=False` now; the list it replaced, pinned, so a changed flag is seen."""
    assert pool.VALUE_ONLY_PARAMS == config.VALUE_ONLY_PARAMS == {
        "lr", "epochs", "schedule", "decay", "drop", "epochs_drop", "milestones", "decay_epochs", "warmup_epochs",
        "seed", "weights", "data", "val_split", "cache", "register_as", "experiment", "run_name", "resume",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "spellings", "typed"),
    [
        ("lr", ["3e-3", "0.003", "3E-3", " 0.0030 ", 0.003], 0.003),
        ("augment", ["false", "False", "FALSE", "0", False], False),
        ("xla", ["true", "True", "1", True], True),
        ("milestones", ["''", '""', "", None], ""),
        ("milestones", ["40,60", "40, 60", " 40 ,60 "], "40,60"),
        ("init_model", ["''", '""', ""], ""),
        ("epochs", ["10", "10.0", "1e1", 10], 10),
        ("warmup_epochs", [None, "", "''"], 0),  # never logged or empty: the default the run trained with
    ],
)
def test_a_param_in_any_spelling_types_to_one_value(name, spellings, typed):
    assert {repr(config.parse_param(name, s)) for s in spellings} == {repr(typed)}


def test_text_that_does_not_parse_stays_text_and_unknown_names_are_their_text():
    assert config.parse_param("lr", "fast") == "fast" and config.parse_param("augment", "maybe") == "maybe"
    assert config.parse_param("train_images", " 288 ") == "288"


def logged(**params) -> dict[str, str]:
    """A run's params as `python -m train` logs them (Python's spelling), with `params` replaced."""
    return {**TrainConfig().as_params(), **{k: str(v) for k, v in params.items()}}


MLFLOW_RUN_SPELLING = {"lr": "3e-3", "augment": "false", "xla": "false", "deterministic": "false", "milestones": "''", "init_model": "''", "register_as": "''", "run_name": "''"}


def test_mlflow_run_and_python_spellings_make_one_configuration():
    python = logged(lr=0.003, stage="scratch", seed=42)
    from_mlflow_run = {**python, **MLFLOW_RUN_SPELLING, "seed": "7", "device": "GPU 0", "train_images": "288"}
    assert config.configuration_key(python) == config.configuration_key(from_mlflow_run)
    assert config.configuration(python)["lr"] == 0.003


@pytest.mark.parametrize(
    ("base", "ignored"),
    [
        ({"stage": "scratch"}, {"weights": "none"}),  # scratch never loads weights
        ({"stage": "finetune", "init_model": "runs:/a/model"}, {"weights": "none", "alpha": "0.35", "dropout": "0.5", "init_model": "runs:/b/model"}),
        ({"stage": "full"}, {"bn_momentum": "0.9"}),  # only scratch sets BatchNormalization's momentum
        ({"schedule": "constant"}, {"decay": "0.5", "decay_epochs": "3", "drop": "0.1", "epochs_drop": "2", "milestones": "4,6"}),
        ({"schedule": "exponential"}, {"drop": "0.1", "epochs_drop": "2", "milestones": "4,6"}),
        ({"schedule": "step", "milestones": "40,60"}, {"epochs_drop": "3", "decay": "0.9"}),  # milestones replace epochs_drop
        ({"model": "efficientnet_b0"}, {"alpha": "0.35"}),
    ],
)
def test_params_the_run_ignores_do_not_make_its_configuration(base, ignored):
    assert config.configuration_key(logged(**base)) == config.configuration_key(logged(**{**base, **ignored}))


@pytest.mark.parametrize("used", [{"stage": "full", "weights": "none"}, {"schedule": "exponential", "decay": "0.5"}, {"schedule": "step", "epochs_drop": "3"}, {"lr": "1e-3"}, {"seed": "1"}])
def test_params_the_run_uses_do(used):
    base = {"stage": used.get("stage", "full"), "schedule": used.get("schedule", "constant")}
    vary = () if "seed" in used else config.REPEAT_PARAMS
    assert config.configuration_key(logged(**base), vary) != config.configuration_key(logged(**{**base, **used}), vary)


def test_same_param_by_name_reads_the_field_type():
    assert config.same_param("''", "", "init_model") and config.same_param("1e-06", 1e-6, "lr") and config.same_param("false", False, "augment")
    assert not config.same_param("1e-5", 1e-6, "lr") and not config.same_param(None, "", "init_model")


def test_resume_accepts_the_spelling_mlflow_run_logged(store_template, tmp_path, monkeypatch):  # noqa: F811
    """Issue 19's regression: `mlflow run` logs an empty init_model as '' and resuming with the same
    parameters stopped with "init_model= but run was started with init_model=''"."""
    path = tmp_path / "mlflow.db"
    path.write_bytes(store_template.read_bytes())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    mlflow.set_tracking_uri(f"sqlite:///{path}")
    try:
        client = MlflowClient()
        wanted = TrainConfig(lr=3e-3, stage="scratch", weights="none")
        run = client.create_run(client.create_experiment("resume"), tags={contract.TAG_KIND: contract.KIND_TRAIN})
        for name, value in {**wanted.as_params(), **MLFLOW_RUN_SPELLING, "weights": "imagenet"}.items():  # weights: scratch ignores it
            client.log_param(run.info.run_id, name, value)
        client.set_terminated(run.info.run_id, "KILLED")
        resume.check_resumable(run.info.run_id, dataclasses.replace(wanted, resume=run.info.run_id, run_name="again"))
        with pytest.raises(ConfigError, match=r"resume: lr=0.001 but run '.*' was started with lr=3e-3"):
            resume.check_resumable(run.info.run_id, dataclasses.replace(wanted, lr=1e-3))
        with pytest.raises(ConfigError, match=r"resume: seed=1 but"):
            resume.check_resumable(run.info.run_id, dataclasses.replace(wanted, seed=1))
    finally:
        mlflow.set_tracking_uri(None)
