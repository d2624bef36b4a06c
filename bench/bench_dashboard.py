"""Benchmark of the dashboard's loading, measured side by side in one run.

A store of 200 runs x 100 epochs x 7 metrics behind a real `mlflow server`:
  1. the project's loader (run search + the bulk history endpoint, 100 runs a call)
     against the naive loop (run search + `MlflowClient.get_metric_history` per run and metric);
  2. the same two on the SQLite store directly;
  3. a reload served by the history cache;
  4. the first full page render in headless Chromium: from opening the URL until the
     curve chart has drawn, for the first session of a fresh `streamlit run` (cold: the
     server process still imports MLflow and Altair) and for later sessions (warm), each in
     a fresh browser; beside it the same for a page with one 10-point chart (the floor).

    .venv/bin/python bench/bench_dashboard.py [--runs 200] [--epochs 100] [--repeats 3] [--json out.json]

The store is built once under --store (default /tmp/lrlab-bench) and reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from app import queries, synthetic  # noqa: E402
from tests.app_fixtures import chromium_page, dashboard_server, mlflow_server, wait_for_chart  # noqa: E402
from train import contract  # noqa: E402

EXPERIMENT = "bench"


def build_store(path: Path, runs: int, epochs: int) -> str:
    """`runs` finished runs of `epochs` epochs and the contract's 7 per-epoch metrics; reused when present."""
    uri = f"sqlite:///{path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    if found and len(client.search_runs([found.experiment_id], max_results=runs + 1)) == runs:
        return uri
    if found:
        client.delete_experiment(found.experiment_id)
        client.rename_experiment(found.experiment_id, f"{EXPERIMENT}-old-{int(time.time())}")
    experiment_id = client.create_experiment(EXPERIMENT)
    rates = [10.0**k for k in range(-6, -1)]
    stages = list(contract.STAGES)
    started = time.perf_counter()
    for index in range(runs):
        lr, stage, seed = rates[index % len(rates)], stages[(index // len(rates)) % len(stages)], index // (len(rates) * len(stages))
        values = synthetic.history(lr, stage, epochs, seed)
        run = client.create_run(experiment_id, run_name=f"{stage} lr={lr:g}")
        metrics = [Metric(key, float(v), 1_700_000_000_000 + epoch * 1000, epoch) for key, series in values.items() for epoch, v in enumerate(series)]
        params = [Param(k, v) for k, v in synthetic.params_for(lr, stage, seed=seed, epochs=epochs).items()]
        for i in range(0, len(metrics), synthetic.LOG_BATCH_MAX):
            client.log_batch(run.info.run_id, metrics=metrics[i : i + synthetic.LOG_BATCH_MAX], params=params if i == 0 else [])
        client.set_terminated(run.info.run_id)
    print(f"built {runs} runs x {epochs} epochs x {len(contract.EPOCH_METRICS)} metrics in {time.perf_counter() - started:.0f} s at {path}", flush=True)
    return uri


def project_load(uri: str) -> int:
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = queries.search_runs(client, [experiment_id])
    history = queries.fetch_history(client, list(runs["run_id"]), list(contract.EPOCH_METRICS))
    return len(history)


def naive_load(uri: str) -> int:
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = queries.search_runs(client, [experiment_id])
    return sum(len(client.get_metric_history(run_id, key)) for run_id in runs["run_id"] for key in contract.EPOCH_METRICS)


def cached_reload(uri: str, cache: queries.HistoryCache) -> int:
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = queries.search_runs(client, [experiment_id])
    return len(cache.load(client, runs, list(contract.EPOCH_METRICS)))


def timed(function, *args) -> tuple[float, int]:
    started = time.perf_counter()
    rows = function(*args)
    return time.perf_counter() - started, rows


def side_by_side(label: str, uri: str, repeats: int, expected_rows: int) -> dict:
    """Project and naive loaders alternated `repeats` times; medians and their ratio."""
    project, naive = [], []
    for _ in range(repeats):
        seconds, rows = timed(project_load, uri)
        assert rows == expected_rows, (label, rows, expected_rows)
        project.append(seconds)
        seconds, rows = timed(naive_load, uri)
        assert rows == expected_rows, (label, rows, expected_rows)
        naive.append(seconds)
    result = {"project_s": statistics.median(project), "naive_s": statistics.median(naive)}
    result["speedup"] = result["naive_s"] / result["project_s"]
    print(f"{label:<22} project {result['project_s']:7.2f} s   naive loop {result['naive_s']:7.2f} s   {result['speedup']:6.1f}x faster", flush=True)
    return result


BASELINE_PAGE = """
import altair as alt, pandas as pd, streamlit as st
st.title("baseline")
st.altair_chart(alt.Chart(pd.DataFrame({"x": range(10), "y": range(10)})).mark_line().encode(x="x", y="y").properties(width=400, height=300))
"""


def page_render(http_uri: str, log_dir: Path, sessions: int = 2, script: Path | None = None) -> list[float]:
    """Seconds from opening the page to its first chart drawn, in a fresh browser, for successive sessions."""
    seconds = []
    with dashboard_server(http_uri, log_dir=log_dir, script=script) as url:
        for _ in range(sessions):
            with chromium_page() as page:
                started = time.perf_counter()
                page.goto(f"{url}/?exp={EXPERIMENT}")
                wait_for_chart(page, timeout_ms=120_000)
                seconds.append(time.perf_counter() - started)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "lrlab-bench")
    parser.add_argument("--no-browser", action="store_true", help="skip the page-render measurement")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    db = args.store / f"runs{args.runs}-epochs{args.epochs}.db"
    sqlite_uri = build_store(db, args.runs, args.epochs)
    expected = args.runs * args.epochs * len(contract.EPOCH_METRICS)
    results = {"runs": args.runs, "epochs": args.epochs, "metrics": len(contract.EPOCH_METRICS), "points": expected}
    print(f"store: {args.runs} runs x {args.epochs} epochs x {len(contract.EPOCH_METRICS)} metrics = {expected:,} points; median of {args.repeats}", flush=True)
    with mlflow_server(sqlite_uri, workdir=args.store) as http_uri:
        results["http"] = side_by_side("mlflow server (HTTP)", http_uri, args.repeats, expected)
        results["sqlite"] = side_by_side("SQLite store", sqlite_uri, args.repeats, expected)
        cache = queries.HistoryCache()
        cached_reload(http_uri, cache)
        seconds, _ = timed(cached_reload, http_uri, cache)
        results["cached_reload_s"] = seconds
        print(f"{'reload, all cached':<22} {seconds:7.2f} s (run search only; {cache.last.cached} runs from the cache)", flush=True)
        if not args.no_browser:
            renders = page_render(http_uri, args.store, sessions=3)
            results["page_render_cold_s"], results["page_render_warm_s"] = renders[0], statistics.median(renders[1:])
            print(f"{'first page render':<22} cold {renders[0]:5.2f} s (fresh streamlit process)   warm {results['page_render_warm_s']:5.2f} s (a new session)", flush=True)
            baseline = args.store / "baseline_page.py"
            baseline.write_text(BASELINE_PAGE)
            floor = page_render(http_uri, args.store, sessions=3, script=baseline)
            results["baseline_page_s"] = statistics.median(floor[1:])
            print(f"{'baseline page':<22} {results['baseline_page_s']:5.2f} s (a title and a 10-point chart, same browser set-up: the floor here)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
