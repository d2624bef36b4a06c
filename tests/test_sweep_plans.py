"""Plans: the ready-made YAML files, overrides from -P, and one-line errors. No training here."""

from __future__ import annotations

import pytest

from sweep import plan as plans
from sweep.cli import build_plan, main, parse_overrides
from train.config import ConfigError


def test_demo_plan_runs_offline_on_the_demo_data():
    demo = plans.load_plan("demo")
    plans.check_configurations(demo)
    configurations = [c for phase in demo.phases for c in phase.configurations()]
    assert demo.size() == len(configurations) == 6 + 2
    assert {c["stage"] for c in configurations} == {"scratch", "finetune"}, "no ImageNet weights needed"
    assert all(c["data"] == "demo" and c["image_size"] == 64 for c in configurations)
    assert {c["schedule"] for c in configurations if c["stage"] == "scratch"} == {"constant", "cosine"}
    assert demo.phases[1].init_from == {"phase": "scratch"}


def test_ready_made_plans_reproduce_the_labs():
    stages = plans.load_plan("stages")
    assert [p.name for p in stages.phases] == ["stages", "finetune"]
    assert {c["stage"] for c in stages.phases[0].configurations()} == {"scratch", "full", "head"}
    assert stages.phases[1].init_from == {"phase": "stages", "stage": "head"}
    assert stages.size() == 9 + 2

    schedules = plans.load_plan("plans/schedules.yaml").phases[0].configurations()
    exponential = sorted(c["decay"] for c in schedules if c["schedule"] == "exponential" and not c.get("warmup_epochs"))
    assert exponential == [0.3, 0.5, 0.7, 0.9]
    assert {"schedule": "step", "drop": 0.1, "milestones": "40,60", "warmup_epochs": 5}.items() <= next(c for c in schedules if c.get("milestones")).items()
    assert any(c["schedule"] == "exponential" and c.get("warmup_epochs") for c in schedules)

    efficientnet = plans.load_plan("efficientnet")
    finetune = efficientnet.phases[1].configurations()
    assert sorted(c["lr"] for c in finetune) == [1e-8, 1e-7]
    assert all(c["model"] == "efficientnet_b0" and c["augment"] is True for c in finetune)


def test_every_ready_made_plan_validates():
    for path in plans.PLANS_DIR.glob("*.yaml"):
        plans.check_configurations(plans.load_plan(str(path)))


def test_overrides_global_phase_specific_grid_and_range():
    plan = build_plan("stages", parse_overrides(["--epochs", "2", "--lr", "1e-3,1e-4", "--finetune.lr=1e-6", "--image_size", "64"]), repeats=2, trials=0)
    first, finetune = plan.phases
    assert first.grid["lr"] == [1e-3, 1e-4] and first.grid["seed"] == [42, 43]
    assert finetune.fixed["lr"] == 1e-6 and "lr" not in finetune.grid
    assert all(c["epochs"] == 2 and c["image_size"] == 64 for c in first.configurations() + finetune.configurations())
    assert plan.size() == 3 * 2 * 2 + 2

    sampled = build_plan("", {"lr": "1e-7..1e-2:log", "stage": "head"}, repeats=1, trials=5)
    assert sampled.phases[0].search["lr"] == plans.Range(1e-7, 1e-2, log=True)
    assert sampled.size() == 5


def test_stages_with_finetune_start_from_the_best_head():
    plan = build_plan("", {"stage": "head,finetune", "lr": "1e-3"}, repeats=1, trials=0)
    assert [p.name for p in plan.phases] == ["train", "finetune"]
    assert plan.phases[1].init_from == {"phase": "train", "stage": "head"}


def test_the_same_command_gives_the_same_sweep_key():
    one = build_plan("stages", {"epochs": "1"}, 1, 0)
    two = build_plan("stages", {"epochs": "1"}, 1, 0)
    other = build_plan("stages", {"epochs": "2"}, 1, 0)
    assert one.key() == two.key() != other.key()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plan", "nope"], "plan 'nope' is neither a YAML file nor a ready-made plan"),
        (["--bogus", "1"], "'bogus' is not a training parameter"),
        (["--lrs", "1e-3,fast"], "lr=fast is not a float"),
        (["--lrs", "1e-2..1e-5:log"], "need LOW < HIGH"),
        (["--stages", "finetune"], "stages=finetune needs a stage to fine-tune from"),
        (["--stages", "scratch", "--lr", "-1"], "lr must be a number greater than 0"),
        (["--nope.lr", "1e-3"], "no phase named 'nope'"),
        (["--storage", "postgresql://u:secret@127.0.0.1:9/x"], "storage 'postgresql://u:***@127.0.0.1:9/x' cannot be opened"),
    ],
)
def test_bad_input_is_one_line_before_any_run(argv, message, capsys, tracking_uri):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert "secret" not in err
    import mlflow

    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_plan_file_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("phases: [\n")
    with pytest.raises(ConfigError, match="broken.yaml line 2 is not valid YAML"):
        plans.load_plan(str(broken))
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("phases:\n  - name: ft\n    fixed: {stage: finetune}\n")
    with pytest.raises(ConfigError, match="phase 'ft' fine-tunes but has no init_from"):
        plans.check_configurations(plans.load_plan(str(orphan)))
    reserved = tmp_path / "reserved.yaml"
    reserved.write_text("phases:\n  - grid: {init_model: [a]}\n")
    with pytest.raises(ConfigError, match="'init_model' is set by the sweep itself"):
        plans.load_plan(str(reserved))


def documented_sweep_parameters() -> list[tuple[str, str]]:
    """Every `-P name=value` the README's Sweeps section gives a sweep (its -e lr_find, -e
    evaluate and -e main command lines aside)."""
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Sweeps") : readme.index("### Where to start")].replace("\\\n", " ")
    lines = [line for line in section.splitlines() if "-e sweep" in line or not line.lstrip().startswith(("mlflow ", "python ", "#"))]
    pairs = re.findall(r"-P ([\w.]+)=([^\s`]+)", "\n".join(lines))
    return sorted(set(pairs))


def test_every_documented_sweep_parameter_works_through_mlflow_run(tmp_path, capsys, tracking_uri, monkeypatch):
    """Rendered by `mlflow run`'s own code (an undeclared parameter becomes `--name value`), each
    parses and plans (dry run); a named option gets the value itself."""
    import shlex

    from mlflow.projects._project_spec import load_project

    from sweep.cli import command
    from tests.conftest import REPO

    documented = documented_sweep_parameters()
    names = {name for name, _ in documented}
    assert {"plan", "lrs", "stages", "repeats", "trials", "storage", "pruning", "prune_startup", "prune_warmup", "register_as", "image_size", "finetune.lr"} <= names, names
    entry = load_project(str(REPO)).get_entry_point("sweep")
    monkeypatch.chdir(REPO)  # where `mlflow run .` runs the command
    stand_ins = {"data": "demo", "storage": f"sqlite:///{tmp_path / 'sweep.db'}", "N": "3"}  # README's paths and placeholders
    for name, value in documented:
        value = stand_ins.get(name, stand_ins.get(value, value))
        given = {name: value, **({"plan": "stages"} if "." in name else {})}
        argv = shlex.split(entry.compute_command(given, None))[3:]
        assert main([*argv, "--dry-run"]) == 0, f"-P {name}={value}: {capsys.readouterr().err}"
        context = command.make_context("python -m sweep", argv)
        if name in context.params:
            assert str(context.params[name]) == value, (name, context.params[name])
        else:
            assert context.args[context.args.index(f"--{name}") + 1] == value
