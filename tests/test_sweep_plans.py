"""Plans: the ready-made YAML files, overrides from -P, and one-line errors. No training here."""

from __future__ import annotations

import pytest

from sweep import plan as plans
from sweep import plan_file, plan_values
from sweep.cli import build_plan, main, parse_overrides
from train.config import ConfigError


def test_demo_plan_runs_offline_on_the_demo_data():
    demo = build_plan("demo", {}, repeats=0, trials=0)
    configurations = [c for phase in demo.phases for c in phase.configurations()]
    assert demo.size() == len(configurations) == (3 + 2) * 2
    assert (demo.repeats, demo.max_repeats, demo.racing, demo.worst_case()) == (2, 4, True, (3 + 2) * 4), "it races to verdicts"
    assert {c["stage"] for c in configurations} == {"scratch", "finetune"}, "no ImageNet weights needed"
    assert all(c["data"] == "demo" and c["image_size"] == 64 for c in configurations)
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
    for path in plan_file.PLANS_DIR.glob("*.yaml"):
        plans.check_configurations(plans.load_plan(str(path)))


def test_overrides_global_phase_specific_grid_and_range():
    plan = build_plan("stages", parse_overrides(["--epochs", "2", "--lr", "1e-3,1e-4", "--finetune.lr=1e-6", "--image_size", "64"]), repeats=2, trials=0)
    first, finetune = plan.phases
    assert first.grid["lr"] == [1e-3, 1e-4] and first.grid["seed"] == [42, 43]
    assert finetune.fixed["lr"] == 1e-6 and "lr" not in finetune.grid
    assert all(c["epochs"] == 2 and c["image_size"] == 64 for c in first.configurations() + finetune.configurations())
    assert plan.size() == 3 * 2 * 2 + 2

    sampled = build_plan("", {"lr": "1e-7..1e-2:log", "stage": "head"}, repeats=1, trials=5)
    assert sampled.phases[0].search["lr"] == plan_values.Range(1e-7, 1e-2, log=True)
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
        (["--study", "it's \"x\""], "study 'it's \"x\"' holds both ' and \""),
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
    """Every `-P name=value` docs/sweeps.md and the README's Sweep section give a sweep (other
    entry points' command lines aside)."""
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## 2. Sweep") : readme.index("## 3.")] + (REPO / "docs" / "sweeps.md").read_text()
    section = section.replace("\\\n", " ")
    lines = [line for line in section.splitlines() if "-e sweep" in line or not line.lstrip().startswith(("mlflow ", "python ", "#"))]
    pairs = re.findall(r"-P ([\w.]+)=([^\s`]+)", "\n".join(lines))
    return sorted(set(pairs))


def test_every_documented_sweep_parameter_works_through_mlflow_run(tmp_path, capsys, tracking_uri, monkeypatch):
    """Rendered by `mlflow run`'s own code (an undeclared parameter becomes `--name value`), each
    parses and plans (dry run); a named option gets the value itself."""
    import shlex

    from sweep.cli import command
    from tests.conftest import REPO
    from train.tracking.mlflow_private import load_project

    documented = documented_sweep_parameters()
    names = {name for name, _ in documented}
    assert {"plan", "lrs", "stages", "repeats", "max_repeats", "margin", "trials", "storage", "pruning", "prune_startup", "prune_warmup", "register_as",
            "image_size", "finetune.lr"} <= names, names
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


def test_plan_values_are_typed_at_load_so_a_plan_and_p_give_the_same_sweep_key(tmp_path):
    """YAML reads 1e-4 (no dot) as text; untyped, the plan's key differed from -P lr=1e-4's and a resumed sweep retrained."""
    written = tmp_path / "typed.yaml"
    written.write_text("name: grid\nphases:\n  - name: train\n    grid: {stage: [full], lr: [1e-4]}\n    fixed: {epochs: 2, augment: true}\n")
    from_file = plans.load_plan(str(written))
    from_command = build_plan("", {"stage": "full", "lr": "1e-4", "epochs": "2", "augment": "true"}, 1, 0)
    assert from_file.phases[0].configurations() == from_command.phases[0].configurations() == [{"stage": "full", "lr": 1e-4, "epochs": 2, "augment": True}]
    keys = [plans.config_key("train", values) for plan in (from_file, from_command) for values in plan.phases[0].configurations()]
    assert keys[0] == keys[1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("phases:\n  - fixed: {milestones: 40}\n", "milestones must be text (quote it) (got 40)"),
        ("phases:\n  - fixed: {epochs: 2.5}\n", "epochs must be a whole number (got 2.5)"),
        ("phases:\n  - grid: {data: [123]}\n", "data must be text (quote it) (got 123)"),
        ("phases:\n  - grid: {lr: [[1.0e-4, 1.0e-5]]}\n", "lr must be a number (got [0.0001, 1e-05])"),
        ("phases:\n  - grid: {lr: [fast]}\n", "lr=fast is not a float"),
        ("phases:\n  - variants: {schedule: cosine}\n", "variants must be a list of parameter sets"),
        ("phases:\n  - {trials: many, search: {lr: 1e-5..1e-3}}\n", "trials must be a whole number of at least 1 (got 'many')"),
        ("name: \"it's \\\"mine\\\"\"\nphases:\n  - grid: {lr: [1.0e-4]}\n", "plan name 'it's \"mine\"' holds both ' and \""),
    ],
)
def test_plan_values_of_the_wrong_type_are_one_line_at_load(body, message, tmp_path, capsys):
    written = tmp_path / "wrong.yaml"
    written.write_text(body)
    assert main(["--plan", str(written), "--dry-run"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], errors


def test_plans_that_would_not_fit_in_memory_are_refused_in_a_second(tmp_path):
    import time

    started = time.monotonic()
    binary = tmp_path / "photo.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(ConfigError, match="photo.yaml is not a text \\(YAML\\) file"):
        plans.load_plan(str(binary))
    levels = "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + levels + "phases:\n  - grid: {seed: *i}\n")  # 10^9 seeds in 10 lines
    with pytest.raises(ConfigError, match="bomb.yaml expands to more than 100,000 YAML values"):
        plans.load_plan(str(bomb))
    recursive = tmp_path / "loop.yaml"
    recursive.write_text("phases: &p\n  - grid: {lr: *p}\n")
    with pytest.raises(ConfigError, match="loop.yaml has a recursive YAML alias"):
        plans.load_plan(str(recursive))
    huge = tmp_path / "huge.yaml"
    axis = ", ".join(str(i + 1) for i in range(100))
    huge.write_text(f"phases:\n  - grid: {{seed: [{axis}], batch_size: [{axis}], epochs: [{axis}]}}\n")
    with pytest.raises(ConfigError, match="asks for 1,000,000 configurations; a sweep runs at most 10,000"):
        build_plan(str(huge), {}, 1, 0)
    with pytest.raises(ConfigError, match="repeats must be from 1 to 10,000"):
        build_plan("", {"stage": "full"}, 10**9, 0)
    with pytest.raises(ConfigError, match="asks for 1,000,000,000 configurations"):
        build_plan("", {"stage": "full", "lr": "1e-5..1e-3"}, 1, 10**9)
    assert time.monotonic() - started < 10


def test_register_as_the_registry_refuses_is_one_line_before_training_or_any_child(capsys, tracking_uri):
    import mlflow

    from train.cli import main as train_main

    assert train_main(["--stage", "scratch", "--weights", "none", "--register-as", "team/model"]) == 2
    assert main(["--stages", "scratch", "--weights", "none", "--register-as", "team:model"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert [e.split(" is not")[0] for e in errors] == ["error: register_as 'team/model'", "error: register_as 'team:model'"], errors
    assert all("is not a name the model registry accepts" in e for e in errors)
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


@pytest.mark.parametrize(
    ("files", "argv", "message"),
    [
        ({"seeds.yaml": "phases:\n  - grid: {stage: [scratch], seed: [1, 2]}\n"}, ["--plan", "seeds.yaml", "--repeats", "3"], "seed is a list (1, 2) and repeats is 3"),
        ({}, ["--stages", "scratch", "--seeds", "7,8", "--repeats", "2"], "seed is a list (7, 8) and repeats is 2"),
        ({"zero.yaml": "phases:\n  - {trials: 0, search: {lr: 1e-5..1e-3}}\n"}, ["--plan", "zero.yaml"], "trials must be a whole number of at least 1 (got 0)"),
        ({"twice.yaml": "phases:\n  - grid: {lr: [1.0e-3]}\n    grid: {lr: [1.0e-4]}\n"}, ["--plan", "twice.yaml"], "twice.yaml line 3: key 'grid' is given twice"),
        ({"empty.yaml": "phases:\n  - grid: {stage: [scratch], lr: []}\n"}, ["--plan", "empty.yaml"], "phase 'phase1' grid lr is an empty list"),
        ({}, ["--stages", "scratch", "--lrs", ","], "phase 'train' grid lr is an empty list"),
        ({}, ["--stages", "scratch", "--prune-startup", "-1"], "--prune-startup"),
        ({}, ["--stages", "scratch", "--prune-warmup", "-2"], "--prune-warmup"),
        ({"text.db": "not a database\n"}, ["--stages", "scratch", "--storage", "sqlite:///text.db"], "storage 'sqlite:///text.db' cannot be opened (file is not a database)"),
    ],
)
def test_a_plan_that_would_silently_do_something_else_is_one_line_before_tensorflow(files, argv, message, tmp_path, monkeypatch, capsys):
    """Issue 19's probe: each of these ran (or traced back after TensorFlow loaded) instead of saying no."""
    import sys

    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    loaded = "tensorflow" in sys.modules
    assert main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert loaded or "tensorflow" not in sys.modules, "TensorFlow loaded for a plan that cannot run"


def test_racing_options_come_from_the_plan_or_the_command_line(tmp_path):
    written = tmp_path / "race.yaml"
    written.write_text("repeats: 2\nmax_repeats: 5\nmargin: 0.02\nphases:\n  - grid: {stage: [scratch], lr: [1.0e-3, 1.0e-2]}\n")
    plan = build_plan(str(written), {}, repeats=0, trials=0)
    assert (plan.repeats, plan.max_repeats, plan.margin, plan.racing) == (2, 5, 0.02, True)
    assert plan.phases[0].grid["seed"] == [42, 43] and plan.size() == 4 and plan.worst_case() == 10
    given = build_plan(str(written), {}, repeats=3, trials=0, max_repeats=6, margin="0.005")
    assert (given.repeats, given.max_repeats, given.margin) == (3, 6, 0.005)
    off = build_plan("", {"stage": "scratch", "lr": "1e-3"}, repeats=2, trials=0)
    assert (off.max_repeats, off.racing) == (2, False)
    with pytest.raises(ConfigError, match=r"max_repeats \(2\) must be at least repeats \(3\)"):
        build_plan(str(written), {}, repeats=3, trials=0, max_repeats=2)
    with pytest.raises(ConfigError, match="margin must be a number from 0 to below 1"):
        build_plan(str(written), {}, repeats=0, trials=0, margin="lots")
