"""Fixtures of the dashboard tests: real SQLite tracking stores filled through MLflow's client,
a real `mlflow server` over a store, and helpers to read what a page drew.

Import them into a test module with `from tests.app_fixtures import *  # noqa: F403`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from app.data import histories, run_search, store, synthetic
from train import contract

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
HOSTILE_NAME = "<script>alert('x')</script> **bold** [link](http://example.com) {\"signal\": \"alert(1)\"} datum['x']"
HOSTILE_PARAM = "<img src=x onerror=alert(1)> _italic_ ${datum.lr}"
EDGE_EXPERIMENT = "edge-cases"
EDGE_EPOCHS = 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store, made once: creating one costs seconds, copying it nothing."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def make_store(store_template, tmp_path):
    """A function returning the URI of a fresh store (a copy of the template) under tmp_path."""
    counter = iter(range(1000))

    def make() -> str:
        path = tmp_path / f"store{next(counter)}" / "mlflow.db"
        path.parent.mkdir(parents=True)
        shutil.copy(store_template, path)
        return f"sqlite:///{path}"

    return make


def fill_edge_cases(client: MlflowClient) -> dict[str, str]:
    """Runs in every awkward state: running, stale, no val_*, no metrics, hostile names, a deleted predecessor."""
    experiment_id = client.create_experiment(EDGE_EXPERIMENT)
    now = int(time.time() * 1000)
    ids = {}
    values = synthetic.history(1e-3, "full", EDGE_EPOCHS, seed=3)
    ids["running"] = synthetic.log_run(client, experiment_id, name="full lr=0.001 running", params=synthetic.params_for(1e-3, "full", seed=3),
                                       values={k: v[:3] for k, v in values.items()}, status="RUNNING", start_ms=now - 3 * synthetic.STEP - 500)  # fmt: skip
    ids["stale"] = synthetic.log_run(client, experiment_id, name="full lr=0.0001 stale", params=synthetic.params_for(1e-4, "full", seed=3),
                                     values={k: v[:2] for k, v in values.items()}, status="RUNNING", start_ms=now - 6 * 3_600_000)  # fmt: skip
    train_only = {k: v for k, v in values.items() if not k.startswith("val_")}
    ids["no_val"] = synthetic.log_run(client, experiment_id, name="full lr=1e-05 no validation", params=synthetic.params_for(1e-5, "full", seed=3), values=train_only, start_ms=now - 60_000)
    ids["no_metrics"] = synthetic.log_run(client, experiment_id, name="head lr=0.01 just started", params=synthetic.params_for(1e-2, "head", seed=3), values={}, status="RUNNING", start_ms=now - 1000)
    hostile_params = {**synthetic.params_for(3e-4, "full", seed=3), contract.PARAM_SCHEDULE: HOSTILE_PARAM}
    ids["hostile"] = synthetic.log_run(client, experiment_id, name=HOSTILE_NAME, params=hostile_params, values=synthetic.history(3e-4, "full", EDGE_EPOCHS, 3),
                                       tags={"note": HOSTILE_NAME}, start_ms=now - 120_000)  # fmt: skip
    head = synthetic.log_run(client, experiment_id, name="head lr=0.001 deleted later", params=synthetic.params_for(1e-3, "head", seed=3), values=synthetic.history(1e-3, "head", EDGE_EPOCHS, 3), start_ms=now - 200_000)
    ids["orphan"] = synthetic.log_run(client, experiment_id, name="finetune lr=1e-05 orphan", params=synthetic.params_for(1e-5, "finetune", seed=3, init_model=f"runs:/{head}/model"),
                                      values=synthetic.history(1e-5, "finetune", EDGE_EPOCHS, 3), tags={contract.TAG_INIT_RUN_ID: head}, start_ms=now - 100_000)  # fmt: skip
    client.delete_run(head)
    ids["deleted"] = head
    return ids


@pytest.fixture(scope="session")
def lab_store(store_template, tmp_path_factory):
    """A realistic store: the design's labs in `lr-study` (synthetic, 20 epochs) and every awkward state in `edge-cases`.

    Shared by the session: tests must not change it (use `make_store` for that).
    """
    path = tmp_path_factory.mktemp("lab") / "mlflow.db"
    shutil.copy(store_template, path)
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri)
    ids = synthetic.fill_lab(client, contract.DEFAULT_EXPERIMENT, epochs=20)
    edge = fill_edge_cases(client)
    return {"uri": uri, "path": path, "lab": ids, "edge": edge}


ANSWER_EXPERIMENT = "known-answer"
ANSWER_WINNER = ("full", "lr 1e-4")  # synthetic.BEST_LOG_LR and CEILING: full peaks at 1e-4, 0.93


@pytest.fixture(scope="session")
def answer_store(store_template, tmp_path_factory):
    """A store with a known answer: scratch, full and head at 1e-2, 1e-3 and 1e-4, three seeds each,
    12 epochs; the winner across stages is full at lr 1e-4 (`ANSWER_WINNER`)."""
    path = tmp_path_factory.mktemp("answer") / "mlflow.db"
    shutil.copy(store_template, path)
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(ANSWER_EXPERIMENT)
    for stage in ("scratch", "full", "head"):
        for lr in (1e-2, 1e-3, 1e-4):
            for seed in (1, 2, 3):
                params = synthetic.params_for(lr, stage, seed=seed, epochs=12)
                synthetic.log_run(client, experiment_id, name=f"{stage} lr={lr:g} seed={seed}", params=params, values=synthetic.history(lr, stage, 12, seed))
    return {"uri": uri, "path": path}


def start_mlflow_server(backend_uri: str, *, port: int | None = None, app_name: str = "", env: dict[str, str] | None = None,
                        workdir: Path | None = None, extra_args: tuple[str, ...] = (), workers: int = 2) -> tuple[subprocess.Popen, str]:
    """Start a real `mlflow server` over `backend_uri` (on `port`, else a free one) and wait until it
    answers /health; return the process (stop it with `stop_mlflow_server`) and its http:// URI."""
    port = port or free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend_uri, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *extra_args]
    if app_name:
        command += ["--app-name", app_name]
    log = (workdir or Path(backend_uri.removeprefix("sqlite:///")).parent) / f"server-{port}.log"
    with open(log, "a") as out:  # a server restarted on its port (an outage) adds to its log
        # The server's job runners (GenAI evaluation) are not needed to read runs and cost CPU.
        server_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        # Its own process group: stopping it stops its uvicorn workers too.
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=server_env, cwd=workdir or log.parent, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(uri + "/health", timeout=1).status_code == 200:
                return process, uri
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_mlflow_server(process)
            raise RuntimeError(f"mlflow server did not start in 90 s: {log.read_text()[-2000:]}")
        time.sleep(0.3)


def stop_mlflow_server(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, **options):
    """A real `mlflow server` over `backend_uri` for the length of the block; yields its http:// URI
    (options as `start_mlflow_server`'s)."""
    process, uri = start_mlflow_server(backend_uri, **options)
    try:
        yield uri
    finally:
        stop_mlflow_server(process)


def server_requests(uri: str, folder: Path) -> list[str]:
    """The API requests a `mlflow_server(..., workdir=folder)` at `uri` has logged so far (uvicorn's
    access log: method, path and status), health checks left out."""
    time.sleep(0.3)  # the workers write their access lines as they answer; let the last ones land
    log = folder / f"server-{uri.rsplit(':', 1)[1]}.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split('"', 2)[1] + line.split('"', 2)[2] for line in lines if '"GET ' in line or '"POST ' in line if "/health" not in line]


def chart_data(element) -> pd.DataFrame:
    """The data an AppTest vega-lite chart element carries (Arrow datasets, and data inline in its
    spec, the page's form: `app.charts.spec.page_spec`), as one DataFrame."""
    import pyarrow as pa

    frames = [pa.ipc.open_stream(io.BytesIO(dataset.data.data)).read_all().to_pandas() for dataset in element.proto.datasets]
    frames += [pd.DataFrame(values) for values in inline_values(json.loads(element.proto.spec))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curve_chart(page):
    """The curve chart among an AppTest page's charts (the forest plot of the verdicts comes first)."""
    for element in page.get("vega_lite_chart"):
        if '"epoch"' in element.proto.spec:
            return element
    raise AssertionError("no curve chart on the page")


def inline_values(node) -> list[list[dict]]:
    """Every `data: {values: [...]}` in a Vega-Lite spec, and the rows of every data: URL the page
    writes for a large dataset (`app.charts.spec.page_spec`)."""
    from app.charts import spec

    found = []
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and isinstance(data.get("values"), list):
            found.append(data["values"])
        elif isinstance(data, dict) and str(data.get("url", "")).startswith(spec.DATA_URL_PREFIX):
            found.append(spec.data_url_rows(data["url"]))
        for key, value in node.items():
            if key != "data":
                found += inline_values(value)
    elif isinstance(node, list):
        for item in node:
            found += inline_values(item)
    return found


def chart_spec(element) -> dict:
    """The Vega-Lite spec of an AppTest chart element; the chart itself when the page wrapped it in
    a one-view `vconcat` (`app.charts.spec.page_spec`)."""
    spec = json.loads(element.proto.spec)
    views = spec.get("vconcat", [])
    return {**{k: v for k, v in spec.items() if k != "vconcat"}, **views[0]} if len(views) == 1 else spec


def load(uri: str, experiment: str = contract.DEFAULT_EXPERIMENT):
    """Runs and tidy history of one experiment, through the app's own loaders."""
    from app.analysis import frames

    client = store.open_client(uri)
    experiments = run_search.list_experiments(client)
    experiment_id = experiments.loc[experiments["name"] == experiment, "experiment_id"].iloc[0]
    runs = run_search.search_runs(client, [experiment_id])
    raw = histories.fetch_history(client, list(runs["run_id"]), histories.history_keys(runs))
    return client, runs, frames.tidy_history(raw, runs)


@contextlib.contextmanager
def dashboard_server(tracking_uri: str, *, log_dir: Path, env: dict[str, str] | None = None, script: Path | None = None, started: list | None = None):
    """`streamlit run app/dashboard.py` (or `script`) on a free port, reading `tracking_uri`; yields the page's URL
    (and appends its process to `started`: the benchmark reads its memory)."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "streamlit"), "run", str(script or REPO / "app" / "dashboard.py"),
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    log = log_dir / f"streamlit-{port}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, **(env or {})})
    if started is not None:
        started.append(process)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(url + "/_stcore/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
CHART_SELECTOR = "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg.marks"


def missing(what: str) -> None:
    """A tool a test needs is not here: skip on a developer's machine, fail in CI (CI=true),
    where a skipped browser test would pass a build that never opened a browser."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"{what}; CI must run this test")
    pytest.skip(what)


@contextlib.contextmanager
def chromium_page(width: int = 1600, height: int = 1100):
    """A headless Chromium page through Playwright, using Debian's chromium (no browser download)."""
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        missing("Playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        missing(f"no Chromium at {CHROMIUM} (run .ci/system-deps.sh)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def wait_for_full_page(page, timeout_ms: int = 60_000) -> None:
    """Until the whole first screen is there: the first chart drawn, the page script done (Streamlit
    marks its app `data-test-script-state=notRunning` once every element has arrived) and every
    table's grid drawn."""
    wait_for_chart(page, timeout_ms)
    page.wait_for_function(
        "() => document.querySelector(\"[data-test-script-state='notRunning']\")"
        " && [...document.querySelectorAll(\"[data-testid='stDataFrame']\")].every("
        "t => (c => c && c.getBoundingClientRect().height > 50)(t.querySelector('canvas')))",
        timeout=timeout_ms,
    )


def wait_for_chart(page, timeout_ms: int = 60_000) -> None:
    """Until a large chart has drawn marks (Vega's canvas or SVG is in the page and sized): the curves,
    whether or not the forest plot of the verdicts (a small chart) is drawn above them yet."""
    page.wait_for_selector(CHART_SELECTOR, state="visible", timeout=timeout_ms)
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg.marks\")]"
        ".some(c => c.getBoundingClientRect().width > 200 && c.getBoundingClientRect().height > 200)",
        timeout=timeout_ms,
    )
