"""`python -m app.data.synthetic`: a click command that fills a real SQLite store."""

from __future__ import annotations

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from app.data import synthetic
from tests.app_fixtures import *  # noqa: F403


def test_the_command_fills_a_store_and_refuses_a_bad_epoch_count(make_store):
    uri = make_store()
    result = CliRunner().invoke(synthetic.main, [uri, "--epochs", "2", "--experiment", "try"])
    assert result.exit_code == 0, result.output
    assert "logged 26 synthetic runs" in result.output
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("try")
    assert len(MlflowClient(tracking_uri=uri).search_runs([experiment.experiment_id])) == 26
    refused = CliRunner().invoke(synthetic.main, [uri, "--epochs", "0"])
    assert refused.exit_code == 2 and "--epochs" in refused.output and "Traceback" not in refused.output
