"""The dashboard against `mlflow server --app-name basic-auth`: the right credentials draw the runs
(the run search through MLflow's client, the histories through the page's own bulk HTTP calls, both
sending MLFLOW_TRACKING_USERNAME/PASSWORD); wrong credentials and a server that does not answer are
one line on the page, never a traceback."""

from __future__ import annotations

import re

import pytest
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app.data import run_search, synthetic
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import REPO, chart_data, curve_chart, free_port, mlflow_server, server_requests
from tests.servers import basic_auth_env

pytestmark = pytest.mark.slow

PAGE = str(REPO / "app" / "dashboard.py")
ADMIN = ("admin", "admin-password-1234")
ALICE = ("alice", "alice-password-1234")
RATES = (1e-2, 1e-3, 1e-4)
EPOCHS = 6


@pytest.fixture(scope="module")
def auth_server(store_template, tmp_path_factory):
    """A basic-auth `mlflow server` on a SQLite store holding three runs; alice is a plain user
    (the default READ permission)."""
    folder = tmp_path_factory.mktemp("auth")
    store = folder / "mlflow.db"
    store.write_bytes(store_template.read_bytes())
    env = basic_auth_env(folder, ADMIN, "dashboard-test-secret")
    with mlflow_server(f"sqlite:///{store}", app_name="basic-auth", env=env, workdir=folder) as uri:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
            patch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
            get_app_client("basic-auth", tracking_uri=uri).create_user(*ALICE)
            client = MlflowClient(tracking_uri=uri)
            experiment_id = client.create_experiment("secret")
            for lr in RATES:
                synthetic.log_run(client, experiment_id, name=f"full lr={lr:g}", params=synthetic.params_for(lr, "full"), values=synthetic.history(lr, "full", EPOCHS))
        yield uri, folder


def open_page(monkeypatch, uri: str, user: tuple[str, str] | None) -> AppTest:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if user:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
    page = AppTest.from_file(PAGE, default_timeout=60)
    page.query_params["exp"] = "secret"
    return page.run()


def one_line_error(page: AppTest) -> str:
    assert not page.exception, [e.value for e in page.exception]
    assert len(page.error) == 1, [e.value for e in page.error]
    text = page.error[0].value
    assert "\n" not in text and "Traceback" not in text
    assert not page.get("vega_lite_chart") and not page.dataframe
    return re.sub(r"\\(.)", r"\1", text)  # as read: the page escapes Markdown


def test_right_credentials_draw_the_runs(auth_server, monkeypatch):
    uri, folder = auth_server
    page = open_page(monkeypatch, uri, ALICE)
    assert not page.exception and not page.error, [e.value for e in (*page.exception, *page.error)]
    table = page.dataframe[0].value
    assert sorted(table["run"]) == sorted(f"full lr={lr:g}" for lr in RATES)
    data = chart_data(curve_chart(page))
    assert set(data["lr_label"].dropna()) == {run_search.format_lr(lr) for lr in RATES}
    assert data["epoch"].max() == EPOCHS - 1  # the curves: histories came through the bulk HTTP calls
    history_calls = [r for r in server_requests(uri, folder) if "/metrics/get-history" in r]
    assert history_calls and all(" 200" in r for r in history_calls), history_calls


@pytest.mark.parametrize("user", [(ALICE[0], "wrong-password"), ("mallory", ALICE[1]), None], ids=["wrong-password", "unknown-user", "no-credentials"])
def test_refused_credentials_are_one_line(auth_server, monkeypatch, user):
    uri, _ = auth_server
    text = one_line_error(open_page(monkeypatch, uri, user))
    assert "refused" in text and "(401 Unauthorized)" in text and "MLFLOW_TRACKING_USERNAME" in text
    assert "wrong-password" not in text and ALICE[1] not in text


def test_a_server_that_does_not_answer_is_one_line(monkeypatch):
    text = one_line_error(open_page(monkeypatch, f"http://127.0.0.1:{free_port()}", ALICE))
    assert "does not answer" in text
