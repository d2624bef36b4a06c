"""MLflow's private API, used in train/tracking/mlflow_private.py alone: still there in this MLflow."""

import ast
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from train.tracking import mlflow_private

REPO = Path(__file__).resolve().parents[1]
PRIVATE_NAMES = ("_initialize_tables", "_save_example", "_validate_serving_input", "_validate_model_name", "_tracking_client", "_project_spec", "SqlMetric", "ajax-api")


def test_every_private_use_is_still_there():
    missing = mlflow_private.check()
    assert not missing, f"MLflow {mlflow.__version__} changed what train/tracking/mlflow_private.py relies on: {missing}"


def test_the_store_behind_a_client(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = mlflow_private.tracking_store(client)
    assert mlflow_private.is_sql_store(store) and not mlflow_private.is_rest_store(store)
    with mlflow_private.sql_session(store) as session:
        table = mlflow_private.sql_metric_table()
        assert session.query(table).count() == 0


def test_no_other_module_reaches_into_mlflow_internals():
    """Only the door names MLflow's private API (tests excepted, which may test it)."""
    offenders = []
    for path in [*REPO.glob("train/**/*.py"), *REPO.glob("app/**/*.py"), *REPO.glob("sweep/**/*.py")]:
        if path.name == "mlflow_private.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(REPO)}: {name}" for name in PRIVATE_NAMES if name in text]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlflow") and any(part.startswith("_") for part in node.module.split(".")):
                offenders.append(f"{path.relative_to(REPO)}: from {node.module}")
    assert not offenders, offenders


def test_logging_a_model_skips_the_requirements_check_and_puts_it_back():
    """lrlab's requirements are the installed versions (train/run/trainer.py's _log_model): MLflow's
    check of them against every installed distribution (3 s a run) is skipped while a model is logged,
    and only then."""
    import mlflow.utils.environment as environment

    original = environment.warn_dependency_requirement_mismatches
    with mlflow_private.keras_log_model_fixes():
        assert environment.warn_dependency_requirement_mismatches is not original
        assert environment.warn_dependency_requirement_mismatches(["tensorflow==0.0.1"]) is None
    assert environment.warn_dependency_requirement_mismatches is original
