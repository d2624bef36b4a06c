"""Parameters: every MLproject parameter reaches the code, and bad input fails fast, in one line."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, error_line, run_train_cli, subprocess_env
from train import config as config_module
from train import contract
from train.cli import flag_name, main

CLI_ONLY = {"experiment"}


def mlproject():
    return yaml.safe_load((REPO / "MLproject").read_text())


def test_every_mlproject_parameter_reaches_the_code():
    entry = mlproject()["entry_points"]["main"]
    declared = entry["parameters"]
    fields = {f.name: f for f in config_module.fields()}
    assert set(declared) == set(fields) - CLI_ONLY
    for name, spec in declared.items():
        assert f"{flag_name(name)} {{{name}}}" in entry["command"], f"{name} is declared but never passed"
        default = fields[name].default
        expected = {"float": float, "int": int, "string": str}[spec["type"]]
        if isinstance(default, bool):
            assert str(spec["default"]).lower() == str(default).lower(), name
        else:
            assert expected(spec["default"]) == default, f"{name}: MLproject default {spec['default']} != {default}"


def test_pins_agree_between_pyproject_and_conda_yaml():
    pyproject = (REPO / "pyproject.toml").read_text()
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_list = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert "mlflow==3.17.2" in pip_list and '"mlflow==3.17.2"' in pyproject
    assert any(p.startswith("tensorflow==2.21") for p in pip_list) and "tensorflow-cpu==2.21" in pyproject


BAD_INPUTS = [
    (["--lr", "0"], "lr"),
    (["--lr", "-1e-3"], "lr"),
    (["--lr", "abc"], "--lr"),
    (["--lr", "nan"], "lr"),
    (["--epochs", "0"], "epochs"),
    (["--batch-size", "0"], "batch_size"),
    (["--stage", "warmup"], "stage"),
    (["--model", "resnet50"], "model"),
    (["--schedule", "linear"], "schedule"),
    (["--optimizer", "lamb"], "optimizer"),
    (["--stage", "finetune"], "init_model"),
    (["--val-split", "0"], "val_split"),
    (["--val-split", "1.5"], "val_split"),
    (["--weights", "/no/such/weights.h5"], "weights"),
    (["--image-size", "16"], "image_size"),
    (["--data", "/no/such/folder"], "data"),
    (["--milestones", "40,x"], "milestones"),
    (["--bn-momentum", "1.5"], "bn_momentum"),
    (["--warmup-epochs", "10", "--epochs", "10"], "warmup_epochs"),
    (["--image-size", "10000"], "image_size must be from 32 to 1024"),
    (["--epochs", "1000000"], "epochs must be from 1 to"),
    (["--batch-size", "100000"], "batch_size must be from 1 to"),
    (["--seed", "-1"], "seed must be a whole number from 0 to 4294967295"),
    (["--seed", str(2**32)], "seed must be a whole number from 0 to"),
    (["--alpha", "0.6"], "alpha=0.6 has no ImageNet weights for mobilenet_v2; use one of 0.35, 0.5, 0.75, 1, 1.3, 1.4, or -P weights=none"),
]


@pytest.mark.parametrize(("args", "named"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_parameter_is_one_line_naming_it(args, named, tracking_uri, capsys):
    assert main(args) == 2
    assert named in error_line(capsys.readouterr().err)


@pytest.mark.parametrize(("name", "content"), [("weights.h5", b"not hdf5 at all"), ("weights.txt", b"\x89HDF\r\n\x1a\n....")])
def test_a_weights_file_that_is_not_one_is_one_line(name, content, tmp_path, tracking_uri, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["--weights", str(path)]) == 2
    assert f"weights file '{path}' is not a Keras weights file" in error_line(capsys.readouterr().err)


def test_init_model_that_does_not_resolve(tracking_uri, capsys):
    assert main(["--stage", "finetune", "--init-model", "runs:/0123456789abcdef/model"]) == 2
    assert "init_model 'runs:/0123456789abcdef/model' does not resolve" in error_line(capsys.readouterr().err)
    assert MlflowClient().search_runs(experiment_ids=[e.experiment_id for e in MlflowClient().search_experiments()]) == []


@pytest.mark.parametrize("layout", ["empty", "one_class", "empty_class", "no_images", "no_validation"])
def test_unusable_data_folder(layout, tmp_path, tracking_uri, capsys):
    folder = tmp_path / "data"
    from tests.test_scan import make_folder

    make_folder(folder, layout)
    assert main(["--data", str(folder), "--stage", "scratch", "--weights", "none"]) == 2
    assert str(folder) in error_line(capsys.readouterr().err)


def test_bad_input_exits_without_loading_tensorflow(tmp_path):
    """Seconds, not TensorFlow's start-up: shown by what the process imported (Python's own import
    log), which a loaded machine cannot change, rather than by a stopwatch, which it can."""
    done = subprocess.run([sys.executable, "-m", "train", "--data", str(tmp_path / "missing"), "--stage", "scratch"], cwd=tmp_path,
                          env=subprocess_env(f"sqlite:///{tmp_path}/mlflow.db", PYTHONPROFILEIMPORTTIME="1"), capture_output=True, text=True, timeout=300)  # fmt: skip
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    said = "".join(line + "\n" for line in done.stderr.splitlines() if not line.startswith("import time:"))
    assert done.returncode == 2
    assert re.fullmatch(r"error: data folder '.*missing' does not exist; .*\n", said), said
    assert "train.cli" in imported and not {name for name in imported if name.split(".")[0] in ("tensorflow", "keras")}


def test_unreachable_tracking_server_is_one_line(tmp_path):
    done = run_train_cli(["--stage", "scratch", "--weights", "none"], "http://127.0.0.1:9")
    assert done.returncode == 2
    assert error_line(done.stderr).startswith("error: tracking server http://127.0.0.1:9 does not answer")


def test_readme_documents_every_parameter():
    readme = (REPO / "README.md").read_text()
    missing = [f.name for f in config_module.fields() if f"| `{f.name}` |" not in readme]
    assert not missing, f"README's parameter table lacks {missing}"


def _sample(param: dict) -> str:
    """A value unlike the default, so a parameter that never reaches its option is noticed."""
    default = param.get("default", "")
    if param.get("type") == "int":
        return str(int(default) + 1)
    if param.get("type") == "float":
        return f"{float(default) * 2:g}"
    return str(default) or "runs:/r1/model"  # non-empty defaults are choices (none, steepest, demo, auto)


def _same(parsed, text: str) -> bool:
    try:
        return float(parsed) == float(text)
    except (TypeError, ValueError):
        return str(parsed) == text


@pytest.mark.parametrize(("entry", "module"), [("sweep", "sweep.cli"), ("lr_find", "train.tools.lr_find"), ("evaluate", "train.tools.evaluate")])
def test_every_parameter_of_the_other_entry_points_is_an_option(entry, module):
    """Each declared parameter, rendered by `mlflow run`'s own code, lands in its option with its
    value (the sweep's data and epochs are plan overrides); an undeclared training parameter too."""
    import importlib
    import shlex

    from train.tracking.mlflow_private import load_project

    values = {name: _sample(param) for name, param in mlproject()["entry_points"][entry]["parameters"].items()}
    undeclared = {"val_split": "0.3"} if entry != "evaluate" else {}
    rendered = load_project(str(REPO)).get_entry_point(entry).compute_command({**values, **undeclared}, None)
    argv = shlex.split(rendered)[3:]  # drop "python -m MODULE"
    context = importlib.import_module(module).command.make_context(f"python -m {module}", argv)
    overrides = dict(zip(context.args[::2], context.args[1::2], strict=True))
    for name, value in {**values, **undeclared}.items():
        if name in context.params:
            assert _same(context.params[name], value), f"{entry}: -P {name}={value} reached the option as {context.params[name]!r}"
        else:
            assert entry == "sweep" and overrides.get(f"--{name}") == value, f"{entry}: -P {name}={value} reached no option ({context.args})"


def test_a_tracking_store_that_cannot_be_used_is_one_line_within_seconds(tmp_path, monkeypatch, capsys):
    from tests.app_fixtures import free_port

    (tmp_path / "notes.db").write_text("these are notes, not a database")
    cases = {
        "foo://bar": "tracking URI 'foo://bar' has a scheme ('foo') MLflow cannot open",
        f"sqlite:///{tmp_path}/notes.db": f"'{tmp_path / 'notes.db'}' is not an SQLite database",
        # MLflow alone retries a database that is down for ~100 s, logging a traceback each time
        f"postgresql://lrlab:secret@127.0.0.1:{free_port()}/runs": "tracking store postgresql://lrlab:***@127.0.0.1:",
    }
    monkeypatch.chdir(tmp_path)
    for uri, expected in cases.items():
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        started = time.monotonic()
        assert main(["--stage", "scratch", "--weights", "none"]) == 2
        line = error_line(capsys.readouterr().err)
        assert expected in line and "secret" not in line, line
        assert time.monotonic() - started < 60, uri  # MLflow's own retries take ~100 s: a margin a loaded machine keeps


def test_a_sqlite_store_in_a_read_only_folder_is_one_line():
    """As root, permissions do not stop writes: the check then runs after dropping to `nobody`."""
    import os
    import pwd
    import shutil
    import subprocess
    import sys
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="lrlab-read-only-"))  # outside pytest's root-only tmp_path
    folder.chmod(0o555)
    as_nobody = "import os; os.setgid({0}); os.setuid({0}); ".format(pwd.getpwnam("nobody").pw_uid) if os.geteuid() == 0 else ""
    code = f"import sys; from train.tracking.store import check_store; {as_nobody}check_store(sys.argv[1])"
    try:
        done = subprocess.run([sys.executable, "-c", code, f"sqlite:///{folder}/mlflow.db"], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(folder)
    assert done.returncode != 0
    assert "or its folder is read-only (SQLite writes a journal beside the database)" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]


def test_init_model_that_is_not_a_keras_model_is_one_line(tracking_uri, capsys):
    import mlflow

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str]) -> list[str]:  # typed: else MLflow warns it cannot validate
            return model_input

    with mlflow.start_run(experiment_id=MlflowClient().create_experiment("other")):
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    capsys.readouterr()  # MLflow's warnings about logging the model
    assert main(["--stage", "finetune", "--init-model", info.model_uri]) == 2
    assert f"init_model '{info.model_uri}' is not a Keras model (flavors: python_function)" in error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_a_failed_start_under_mlflow_run_leaves_a_named_failed_run_saying_why(tracking_uri):
    """`mlflow run` creates the run before lrlab starts: it must not stay nameless (or RUNNING)."""
    from tests.conftest import mlflow_run

    done = mlflow_run({"stage": "scratch", "weights": "none", "image_size": "10000"}, tracking_uri, timeout=300)
    assert done.returncode != 0
    assert "error: image_size must be from 32 to 1024 pixels" in done.stderr
    (run,) = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"
    assert run.info.run_name == "scratch lr=0.0001"
    assert run.data.tags[contract.TAG_STOP_REASON].startswith("image_size must be from 32 to 1024 pixels for mobilenet_v2 (got 10000)")
