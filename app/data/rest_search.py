"""The run search's REST request, with the standard library alone; and the dashboard server's
first search, started with it before the page imports pandas and MLflow.

`streamlit run app/dashboard.py` imports the page's modules (pandas, MLflow, Altair: 2-3 s)
before its server answers, and its warm-up (app/page/warmup.py) searched the runs only after
them: the first visitor waited for the search (1.5 s for 1,000 runs behind `mlflow server`).
`start()` sends the same requests from a thread while those imports run, with the standard
library alone, and the warm-up takes what it found (`take`).

It covers the common set-up only: an http(s) tracking server, with MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN. A custom TLS setting or an auth plugin leaves
the search to MLflow's own client, which honours them; so does any failure here (the page then
reports it in MLflow's words). The REST request itself (endpoint, page size, paging) is written
once, here (`search_pages`): `run_search` sends the same through MLflow's client code.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import urllib.request

from train import contract

SEARCH_ENDPOINT = "/api/2.0/mlflow/runs/search"  # MLflow's public REST API (the call MlflowClient.search_runs makes)
EXPERIMENTS_ENDPOINT = "/api/2.0/mlflow/experiments/search"
SEARCH_PAGE = 1000
HTTP_TIMEOUT_SECONDS = 60
ENV_EXPERIMENTS = "LRLAB_WARM_EXPERIMENTS"  # comma-separated names the server reads first (else the default experiment)
# Settings of MLflow's own requests this module does not implement: with any of them set, it stays out.
CLIENT_SETTINGS = ("MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_TRACKING_AUTH",
                   "MLFLOW_WORKSPACE")  # fmt: skip


def search_pages(post, experiment_ids: list[str], filter_string: str, max_runs: int) -> list[dict]:
    """The runs of a REST run search, page after page (`SEARCH_PAGE` runs each, up to `max_runs`),
    as the server's JSON; `post(endpoint, body)` sends one request and returns its decoded answer."""
    runs, token = [], None
    while len(runs) < max_runs:
        body = {"experiment_ids": experiment_ids, "filter": filter_string, "run_view_type": "ACTIVE_ONLY", "max_results": min(SEARCH_PAGE, max_runs - len(runs))}
        if token:
            body["page_token"] = token
        answer = post(SEARCH_ENDPOINT, body)
        runs += answer.get("runs", ())
        token = answer.get("next_page_token")
        if not token:
            break
    return runs


def default_experiments(names: list[str]) -> list[str]:
    """The experiment(s) a page opens on when its URL names none: the contract's default
    experiment when the store has it, else the most recently updated (`names` is newest first)."""
    return [contract.DEFAULT_EXPERIMENT] if contract.DEFAULT_EXPERIMENT in names else names[:1]


def warm_experiments(names: list[str]) -> list[str]:
    """What the server reads first: LRLAB_WARM_EXPERIMENTS, else the experiment a page opens on."""
    return [n.strip() for n in os.environ.get(ENV_EXPERIMENTS, "").split(",") if n.strip()] or default_experiments(names)


class Found:
    """What the early search read: experiments as (id, name, last update), newest first; the chosen
    experiments' ids; their runs as the server's JSON."""

    def __init__(self, experiments: list[tuple[str, str, int]], experiment_ids: list[str], runs: list[dict]):
        self.experiments, self.experiment_ids, self.runs = experiments, experiment_ids, runs


_started: dict[str, tuple[threading.Thread, list]] = {}  # by tracking URI: the thread and its result
_LOCK = threading.Lock()


def start(uri: str | None = None) -> bool:
    """Start the search in a thread, once per process and store; False where it stays out."""
    uri = uri or contract.tracking_uri()
    if not uri.startswith(("http://", "https://")) or any(os.environ.get(name) for name in CLIENT_SETTINGS):
        return False
    with _LOCK:
        if uri in _started:
            return True
        result: list = []
        thread = threading.Thread(target=_search_into, args=(uri, result), name="lrlab-early-search", daemon=True)
        _started[uri] = (thread, result)
    thread.start()
    return True


def take(uri: str) -> Found | None:
    """What the early search of `uri` found (waiting for it to end), once; None if it was not
    started, failed, or was taken already."""
    with _LOCK:
        started = _started.pop(uri, None)
    if started is None:
        return None
    thread, result = started
    thread.join(timeout=2 * HTTP_TIMEOUT_SECONDS)
    return result[0] if result else None


def _search_into(uri: str, result: list) -> None:
    try:
        post = _poster(uri)
        experiments = _experiments(post)
        wanted = warm_experiments([name for _, name, _ in experiments])
        ids = [experiment_id for experiment_id, name, _ in experiments if name in wanted]
        result.append(Found(experiments, ids, search_pages(post, ids, "", 10_000) if ids else []))
    except Exception:  # noqa: BLE001 - any failure leaves the search to MLflow's client, which reports it
        return


def _experiments(post) -> list[tuple[str, str, int]]:
    rows, token = [], None
    while True:
        body = {"view_type": "ACTIVE_ONLY", "max_results": 1000, **({"page_token": token} if token else {})}
        answer = post(EXPERIMENTS_ENDPOINT, body)
        rows += [(e["experiment_id"], e.get("name", ""), int(e.get("last_update_time") or 0)) for e in answer.get("experiments", ())]
        token = answer.get("next_page_token")
        if not token:
            break
    return sorted(rows, key=lambda row: -row[2])  # newest first; ties keep the server's order


def _poster(uri: str):
    headers = {"Content-Type": "application/json"}
    user, password, token = (os.environ.get(name) for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"))
    if user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    base = uri.rstrip("/")

    def post(endpoint: str, body: dict) -> dict:
        request = urllib.request.Request(base + endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # a refusal (4xx, 5xx) raises
            return json.loads(response.read())

    return post
