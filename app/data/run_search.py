"""The run search: experiments and runs from MLflow into one pandas row per run.

Nothing here imports Streamlit: the page, the report command and the benchmark share it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys

import pandas as pd
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from app.analysis import numbers
from train import contract
from train.tracking import mlflow_private

SEARCH_PAGE = 1000
ACTIVE_STATUSES = ("RUNNING", "SCHEDULED")


def list_experiments(client: MlflowClient) -> pd.DataFrame:
    """Active experiments: experiment_id, name, last_update_time; newest first."""
    rows, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        rows += [(e.experiment_id, e.name, e.last_update_time or 0) for e in page]
        token = page.token
        if not token:
            break
    frame = pd.DataFrame(rows, columns=["experiment_id", "name", "last_update_time"])
    return frame.sort_values("last_update_time", ascending=False, kind="stable").reset_index(drop=True)


def search_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "", max_runs: int = 10_000) -> pd.DataFrame:
    """Every active run of the experiments that matches `filter_string`, one row each (see `runs_frame`).

    Behind `mlflow server` the REST search is read as JSON straight into the rows (`_search_rest`):
    MlflowClient turns the same answer into protobuf and then entities first, which for 1,000 runs
    costs as much CPU as the server's own query. Any other store goes through MlflowClient."""
    if not experiment_ids:
        return runs_frame([], {})
    store = mlflow_private.tracking_store(client)
    if mlflow_private.is_rest_store(store):
        rows = _search_rest(store.get_host_creds(), [str(e) for e in experiment_ids], filter_string or "", max_runs)
    else:
        rows = [_run_row(run) for run in _search_client(client, experiment_ids, filter_string, max_runs)]
    names = {e.experiment_id: e.name for e in _experiments_by_id(client, experiment_ids)}
    return _frame(rows, names)


def _search_client(client: MlflowClient, experiment_ids, filter_string: str, max_runs: int) -> list:
    runs, token = [], None
    while len(runs) < max_runs:
        page = client.search_runs(
            experiment_ids=list(experiment_ids),
            filter_string=filter_string or "",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=min(SEARCH_PAGE, max_runs - len(runs)),
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            break
    return runs


SEARCH_ENDPOINT = "/api/2.0/mlflow/runs/search"  # MLflow's public REST API (the call MlflowClient.search_runs makes)
HTTP_TIMEOUT_SECONDS = 60


def _search_rest(creds, experiment_ids: list[str], filter_string: str, max_runs: int) -> list[tuple]:
    """The REST search's pages (`SEARCH_PAGE` runs each, up to `max_runs`), the request MlflowClient
    sends, read as JSON into `_run_row`'s rows, through MLflow's own request code
    (`mlflow_private.rest_request`: credentials, TLS settings, retries and errors as the client's)."""
    rows, token = [], None
    while len(rows) < max_runs:
        body = {"experiment_ids": experiment_ids, "filter": filter_string, "run_view_type": "ACTIVE_ONLY", "max_results": min(SEARCH_PAGE, max_runs - len(rows))}
        if token:
            body["page_token"] = token
        answer = mlflow_private.rest_request(creds, SEARCH_ENDPOINT, "POST", json=body, timeout=HTTP_TIMEOUT_SECONDS).json()
        rows += [_json_row(run) for run in answer.get("runs", ())]
        token = answer.get("next_page_token")
        if not token:
            break
    return rows


def _number(value, default=0.0) -> float:
    """A JSON double as protobuf's JSON reader takes it: a number, or "NaN", "Infinity", "-Infinity"."""
    return default if value is None else float(value)


def _json_row(run: dict) -> tuple:
    """`_run_row` of a run in the REST API's JSON (proto2: a field never set is absent; as in
    MLflow's entities it reads as "", 0, and an end time of 0 as None)."""
    info, data = run.get("info", {}), run.get("data", {})
    metrics, stamps = {}, [0]
    for metric in data.get("metrics", ()):
        metrics[metric.get("key", "")] = _number(metric.get("value"))
        stamps.append(int(metric.get("timestamp") or 0))
    run_id = info.get("run_id") or info.get("run_uuid", "")
    return (
        run_id, info.get("run_name", ""), info.get("experiment_id", ""), info.get("status", "RUNNING"),
        int(info.get("start_time") or 0), int(info.get("end_time") or 0) or None,
        {p.get("key", ""): p.get("value", "") for p in data.get("params", ())},
        {t.get("key", ""): t.get("value", "") for t in data.get("tags", ())},
        metrics, max(stamps),
    )  # fmt: skip


def _run_row(run) -> tuple:
    """What a row is made of, from an MLflow `Run`: run_id, run_name, experiment_id, status,
    start_time, end_time, params, tags, latest metrics, newest metric timestamp."""
    info = run.info
    return (
        info.run_id, info.run_name, info.experiment_id, info.status, info.start_time, info.end_time,
        dict(run.data.params), dict(run.data.tags), dict(run.data.metrics), max([0, *(m.timestamp or 0 for m in run.data._metric_objs)]),
    )  # fmt: skip


def _experiments_by_id(client: MlflowClient, experiment_ids):
    found = []
    for experiment_id in experiment_ids:
        try:
            found.append(client.get_experiment(experiment_id))
        except MlflowException:
            continue
    return found


def fetch_runs(client: MlflowClient, run_ids: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Runs by id (predecessors outside the selection); returns them and the ids that are deleted or gone."""
    found, missing = [], []
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            missing.append(run_id)
            continue
        if run.info.lifecycle_stage == "deleted":
            missing.append(run_id)
        else:
            found.append(run)
    names = {e.experiment_id: e.name for e in _experiments_by_id(client, sorted({r.info.experiment_id for r in found}))}
    return runs_frame(found, names), missing


def predecessors(client: MlflowClient, selected: pd.DataFrame, known: pd.DataFrame, max_depth: int = 10) -> tuple[pd.DataFrame, list[str]]:
    """The runs `selected` continue from (`init_run_id`, followed back), from `known` or read by id;
    and the ids that are deleted or gone."""
    found, missing = [], []
    by_id = known.set_index("run_id", drop=False)
    frontier = set(selected["init_run_id"]) - {""}
    seen = set(selected["run_id"])
    for _ in range(max_depth):
        frontier -= seen
        if not frontier:
            break
        seen |= frontier
        present = by_id.loc[by_id.index.intersection(sorted(frontier))]
        fetched, gone = fetch_runs(client, sorted(frontier - set(present.index)))
        missing += gone
        step = pd.concat([present, fetched], ignore_index=True)
        found.append(step)
        frontier = set(step["init_run_id"]) - {""}
    ancestors = pd.concat(found, ignore_index=True) if found else runs_frame([], {})
    return ancestors.drop_duplicates("run_id").reset_index(drop=True), missing


def with_predecessors(client: MlflowClient, selected: pd.DataFrame, known: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What a joined curve draws from: (`selected` and the runs they continue from, `known` and those runs)."""
    ancestors, _ = predecessors(client, selected, known)
    wanted = pd.concat([selected, ancestors], ignore_index=True).drop_duplicates("run_id")
    return wanted, pd.concat([known, ancestors], ignore_index=True).drop_duplicates("run_id")


def format_lr(value: float) -> str:
    """One spelling per learning rate ("1e-5"), whatever the param's spelling was ("1e-05", "0.00001"): `app.analysis.numbers`."""
    return numbers.format_lr(value)


to_float = numbers.to_float  # a param as a number (NaN when none): written once, in app/analysis/numbers.py


def finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A run's latest metrics, a non-finite one as NaN. MLflow keeps ±inf as ±1.8e308 (the largest
    float): left as it is, a diverged run would rank best and print as a 309-digit number."""
    return {key: value if value is not None and abs(value) < sys.float_info.max else math.nan for key, value in metrics.items()}


RUN_COLUMNS = [
    "run_id", "run_name", "experiment_id", "experiment", "status", "start_time", "end_time", "last_update",
    "lr", "lr_label", "stage", "model", "schedule", "seed", "data", "kind", "sweep",
    "init_run_id", "parent_run_id", "stop_reason", "metric_keys", "params", "tags", "metrics",
]  # fmt: skip


def runs_frame(runs, experiment_names: dict[str, str]) -> pd.DataFrame:
    """One row per run (MLflow `Run`s): info, the contract's params and tags as columns, and all
    params, tags and latest metrics as dicts (`params`, `tags`, `metrics`). Times are milliseconds
    since the epoch; `last_update` is the run's latest start, end or metric time."""
    return _frame([_run_row(run) for run in runs], experiment_names)


def _frame(rows: list[tuple], experiment_names: dict[str, str]) -> pd.DataFrame:
    """`runs_frame` of `_run_row`s."""
    out = []
    for run_id, run_name, experiment_id, status, start_time, end_time, params, tags, raw_metrics, newest in rows:
        metrics = finite_metrics(raw_metrics)
        lr = to_float(params.get(contract.PARAM_LR))
        out.append({
            "run_id": run_id,
            "run_name": run_name or run_id[:8],
            "experiment_id": experiment_id,
            "experiment": experiment_names.get(experiment_id, experiment_id),
            "status": status,
            "start_time": start_time,
            "end_time": end_time,
            "last_update": max(start_time or 0, end_time or 0, newest or 0),
            "lr": lr,
            "lr_label": format_lr(lr),
            "stage": params.get(contract.PARAM_STAGE, ""),
            "model": params.get(contract.PARAM_MODEL, ""),
            "schedule": params.get(contract.PARAM_SCHEDULE, ""),
            "seed": params.get(contract.PARAM_SEED, ""),
            "data": params.get(contract.PARAM_DATA, ""),
            "kind": tags.get(contract.TAG_KIND, ""),
            "sweep": tags.get(contract.TAG_SWEEP_STUDY, ""),
            "init_run_id": tags.get(contract.TAG_INIT_RUN_ID, ""),
            "parent_run_id": tags.get(MLFLOW_PARENT_RUN_ID, ""),
            "stop_reason": tags.get(contract.TAG_STOP_REASON, ""),
            "metric_keys": tuple(sorted(metrics)),
            "params": params,
            "tags": {k: v for k, v in tags.items() if not k.startswith("mlflow.")},
            "metrics": metrics,
        })
    frame = pd.DataFrame(out, columns=RUN_COLUMNS)
    frame["lr"] = frame["lr"].astype(float)
    return frame


def runs_version(runs: pd.DataFrame) -> str:
    """A fingerprint of what the runs hold: ids, names, states, params, tags and each run's latest
    update (start, end or newest metric). Equal fingerprints mean the page built from them is the
    same, so sessions can share it without asking the store again."""
    rows = runs.sort_values("run_id")[["run_id", "run_name", "status", "end_time", "last_update", "params", "tags", "metrics"]]
    text = json.dumps(rows.to_numpy().tolist(), sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha1(text.encode()).hexdigest()


def default_experiments(names: list[str]) -> list[str]:
    """The experiment(s) a page opens on when its URL names none: the contract's default
    experiment when the store has it, else the most recently updated (`names` is newest first)."""
    return [contract.DEFAULT_EXPERIMENT] if contract.DEFAULT_EXPERIMENT in names else names[:1]
