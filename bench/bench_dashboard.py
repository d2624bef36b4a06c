"""Benchmark of the dashboard's loading and first render, measured side by side in one run.

A store of 200 runs x 100 epochs x 7 metrics behind a real `mlflow server`:
  1. the project's loader (run search + the bulk history endpoint, 100 runs a call)
     against the naive loop (run search + `MlflowClient.get_metric_history` per run and metric);
  2. the same two on the SQLite store directly;
  3. a reload served by the history cache;
  4. the first page render in headless Chromium, from opening the URL until the curve chart has
     drawn, each session in a fresh browser, on a typical experiment (--render 40x50: 40 runs x 50
     epochs) and a large one (200x100), served by `mlflow server`:
       - warm: a new session of a `streamlit run` that has served one before, in a fresh browser
         (it fetches and compiles Streamlit's ~150 script files); and the same in a new tab of a
         browser that has shown the page before (files cached);
       - cold: the first session of a fresh `streamlit run`, opened as soon as the server answers
         (`app/dashboard.py` is an st.App: the server imports the page's modules before it answers,
         and its warm-up builds the default page meanwhile: the answer, then the curve chart);
     this checkout's dashboard against the one at --old-rev (extracted with `git archive`, run on
     its own packages), sessions alternating between the two
     servers so both see the same machine load; beside them `streamlit run app/serve.py` (the same
     page, the store read by its warm-up as the server starts) and a page with one 10-point chart
     and a 10-row table (the floor of this browser set-up). Each session is timed until the first
     chart has drawn (the verdicts' forest plot), the curve chart, and the full page (script done,
     every table drawn);
  5. with --scale 10000x20: a store of that many runs (the first visitor and a new session of a
     fresh `streamlit run`, beside the floor page) and the dashboard server's peak resident memory.

    python -m bench.bench_dashboard [--runs 200] [--epochs 100] [--repeats 3]
        [--render 40x50 --render 200x100] [--sessions 4] [--cold 2] [--old-rev REV] [--skip-loaders]
        [--scale 10000x20] [--json out.json]

Stores are written once under --store (default /tmp/lrlab-bench) with bulk SQL inserts and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from app.data import histories, history_cache, run_search, synthetic
from bench.peak_memory import peak_rss
from tests.app_fixtures import chromium_page, dashboard_server, mlflow_server, wait_for_chart, wait_for_full_page
from train import contract

REPO = Path(__file__).resolve().parents[1]

EXPERIMENT = "bench"
# The dashboard before run-level metrics and bounded curves: every history of the experiment read
# (the curve chart's keys first), the verdicts computed from them.
OLD_REV = "5ea3b48"


def build_store(path: Path, runs: int, epochs: int) -> str:
    """`runs` finished runs of `epochs` epochs, the contract's 7 per-epoch metrics and the run-level
    ones training logs at its end, written into the SQLite store with bulk SQL inserts (through
    MlflowClient 10,000 runs take an hour); reused when present. The rows are those the client writes."""
    uri = f"sqlite:///{path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    if found and _store_has(path, found.experiment_id, runs):
        return uri
    if found:
        client.delete_experiment(found.experiment_id)
        client.rename_experiment(found.experiment_id, f"{EXPERIMENT}-old-{int(time.time())}")
    experiment_id = client.create_experiment(EXPERIMENT)
    artifacts = client.get_experiment(experiment_id).artifact_location
    started = time.perf_counter()
    with sqlite3.connect(path) as db:
        for first in range(0, runs, 500):  # a batch of runs per transaction: bounded memory
            rows = _run_rows(range(first, min(runs, first + 500)), epochs, int(experiment_id), artifacts)
            for table, columns, values in rows:
                db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values)
    print(f"built {runs} runs x {epochs} epochs x {len(contract.EPOCH_METRICS)} metrics in {time.perf_counter() - started:.0f} s at {path}", flush=True)
    return uri


RATES = [10.0**k for k in range(-6, -1)]


def _run_rows(indexes, epochs: int, experiment_id: int, artifacts: str) -> list[tuple[str, list[str], list[tuple]]]:
    """The rows of runs `indexes` (lr, stage and seed from the index: 5 rates x 4 stages, then seeds)."""
    runs, params, tags, metrics, latest = [], [], [], [], []
    start = 1_700_000_000_000
    for index in indexes:
        lr, stage, seed = RATES[index % len(RATES)], contract.STAGES[(index // len(RATES)) % len(contract.STAGES)], index // (len(RATES) * len(contract.STAGES))
        run_id, name = uuid.uuid4().hex, f"{stage} lr={lr:g}"
        values = synthetic.history(lr, stage, epochs, seed)
        end = start + (epochs + 1) * synthetic.STEP
        runs.append((run_id, name, "UNKNOWN", "", "", "bench", "FINISHED", start, end, "", "active", f"{artifacts}/{run_id}/artifacts", experiment_id))
        params += [(key, value, run_id) for key, value in synthetic.params_for(lr, stage, seed=seed, epochs=epochs).items()]
        tags += [(MLFLOW_RUN_NAME, name, run_id), (contract.TAG_KIND, contract.KIND_TRAIN, run_id)]
        for key, series in values.items():
            metrics += [(key, float(v), start + (epoch + 1) * synthetic.STEP, run_id, epoch, 0) for epoch, v in enumerate(series)]
            latest.append((key, float(series[-1]), start + epochs * synthetic.STEP, epochs - 1, 0, run_id))
        for key, value in synthetic.summary_metrics(values).items():
            metrics.append((key, value, end, run_id, 0, 0))
            latest.append((key, value, end, 0, 0, run_id))
    return [
        ("runs", ["run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status", "start_time", "end_time", "source_version", "lifecycle_stage", "artifact_uri", "experiment_id"], runs),
        ("params", ["key", "value", "run_uuid"], params),
        ("tags", ["key", "value", "run_uuid"], tags),
        ("metrics", ["key", "value", "timestamp", "run_uuid", "step", "is_nan"], metrics),
        ("latest_metrics", ["key", "value", "timestamp", "step", "is_nan", "run_uuid"], latest),
    ]  # fmt: skip


def _store_has(path: Path, experiment_id: str, runs: int) -> bool:
    """Whether the store holds `runs` runs in the experiment, written with the run-level metrics."""
    with sqlite3.connect(path) as db:
        count = db.execute("SELECT COUNT(*) FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active'", (int(experiment_id),)).fetchone()[0]
        summarised = db.execute(
            "SELECT COUNT(*) FROM latest_metrics JOIN runs USING (run_uuid) WHERE experiment_id = ? AND key = ?", (int(experiment_id), contract.EPOCHS_TRAINED)
        ).fetchone()[0]  # fmt: skip
    return count == summarised == runs


def project_load(uri: str) -> int:
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = run_search.search_runs(client, [experiment_id])
    history = histories.fetch_history(client, list(runs["run_id"]), list(contract.EPOCH_METRICS))
    return len(history)


def naive_load(uri: str) -> int:
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = run_search.search_runs(client, [experiment_id])
    return sum(len(client.get_metric_history(run_id, key)) for run_id in runs["run_id"] for key in contract.EPOCH_METRICS)


def cached_reload(uri: str, cache: history_cache.HistoryCache) -> int:
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = run_search.search_runs(client, [experiment_id])
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
st.dataframe(pd.DataFrame({"x": range(10), "y": range(10)}))
"""


# Any chart drawn: on the dashboard the forest plot of the verdicts (the answer), drawn first.
ANY_CHART = (
    "() => [...document.querySelectorAll(\"[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg.marks\")]"
    ".some(c => c.getBoundingClientRect().width > 100 && c.getBoundingClientRect().height > 40)"
)
MOMENTS = {"answer": "the first chart drawn (the verdicts' forest plot)", "chart": "the curve chart drawn", "full": "the full page (chart, table, script done)"}


def open_session(url: str, page=None, timeout_ms: int = 120_000) -> tuple[float, float, float]:
    """Seconds from opening the page to its first chart drawn (the answer: the forest plot), to
    its curve chart drawn (a chart over 200 px each way; the forest plot is smaller), and to the
    whole page (the script done, every table drawn): in a fresh browser, or in `page` (a new tab
    of a browser that has shown the dashboard before: its files are cached)."""
    with chromium_page() if page is None else contextlib.nullcontext(page) as tab:
        started = time.perf_counter()
        tab.goto(f"{url}/?exp={EXPERIMENT}")
        tab.wait_for_function(ANY_CHART, timeout=timeout_ms)
        answer = time.perf_counter() - started
        wait_for_chart(tab, timeout_ms=timeout_ms)
        chart = time.perf_counter() - started
        wait_for_full_page(tab, timeout_ms=timeout_ms)
        return answer, chart, time.perf_counter() - started


def page_env(script: Path) -> dict[str, str]:
    """The environment a page runs in: an old page extracted by `old_dashboard` imports its own
    `app` and `train` (its folder first on the path), not this checkout's."""
    root = script.resolve().parents[1]
    return {} if root == REPO else {"PYTHONPATH": str(root)}


def old_dashboard(rev: str, folder: Path) -> Path | None:
    """The dashboard at `rev` (with the contract it read), extracted under `folder`; None without git."""
    target = folder / f"dashboard-{rev}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "app", "train"], capture_output=True, check=True)  # the page may import any of train/
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"old dashboard at {rev} not available ({error}); measuring this checkout only", flush=True)
        return None
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "app" / "dashboard.py"


def render_side_by_side(http_uri: str, pages: dict[str, Path], log_dir: Path, *, cold: int, sessions: int) -> dict[str, dict]:
    """Per page and fresh `streamlit run` process (`cold` of them): its first session, opened as
    soon as the server answers (the servers are started one after the other, each once the one
    before has served its whole first page, so no start-up competes with another's; each round in
    another order), `sessions`
    later sessions each in a fresh browser, and `sessions` new tabs of one browser that has shown
    the page once before. The pages' later sessions alternate. Seconds, every measurement kept."""
    times = {name: {"cold": [], "warm": [], "returning": []} for name in pages}
    for round_number in range(cold):
        # Each round starts the pages in another order: the first server of a round meets a colder machine.
        turn = round_number % len(pages)
        order = list(pages.items())[turn:] + list(pages.items())[:turn]
        with contextlib.ExitStack() as stack:
            urls = {}
            for name, script in order:  # one fresh server at a time: its start-up competes with no other's
                urls[name] = stack.enter_context(dashboard_server(http_uri, log_dir=log_dir, script=script, env=page_env(script)))
                times[name]["cold"].append(open_session(url=urls[name]))
            for _ in range(sessions):
                for name, url in urls.items():
                    times[name]["warm"].append(open_session(url))
            browser = stack.enter_context(chromium_page()).context.browser
            contexts = {name: browser.new_context(viewport={"width": 1600, "height": 1100}) for name in urls}
            for name, url in urls.items():
                open_session(url, contexts[name].new_page())  # the browser's first visit: fills its cache
            for _ in range(sessions):
                for name, url in urls.items():
                    tab = contexts[name].new_page()
                    times[name]["returning"].append(open_session(url, tab))
                    tab.close()
    return times


SCRIPT_RUNS = """
import json, re, sys, time
from streamlit.testing.v1 import AppTest
seconds = []
for _ in range({sessions}):
    page = AppTest.from_file({script!r}, default_timeout=300)
    page.query_params["exp"] = {experiment!r}
    started = time.perf_counter()
    page.run()
    wall = time.perf_counter() - started
    assert not page.exception and not page.error and page.get("vega_lite_chart"), [e.value for e in (*page.exception, *page.error)]
    try:  # the page's own time: kept in session state (this checkout), or written in the sidebar (before)
        own = [page.session_state["_served"]["page_seconds"]]
    except KeyError:
        own = [float(m.group(1)) for c in page.sidebar.caption for m in [re.search(r"(?:page built in|This page took) ([0-9.]+) s", c.value)] if m]
    seconds.append([wall, own[0]])
print("SECONDS", json.dumps(seconds))
"""


def script_runs(http_uri: str, script: Path, sessions: int) -> list[list[float]]:
    """The page's script alone (no browser), run by Streamlit's AppTest for `sessions` new sessions
    in one fresh process: per session [wall seconds of the run, the seconds the page reports it
    took (its main function, after the imports)]. The first session pays the imports and the
    store's reads; later ones are what a new session of a running server costs the server."""
    import os

    code = SCRIPT_RUNS.format(sessions=sessions, script=str(script), experiment=EXPERIMENT)
    env = {**os.environ, "MLFLOW_TRACKING_URI": http_uri, **page_env(script)}
    root = Path(page_env(script).get("PYTHONPATH", REPO))  # `python -c` puts its folder first on the path
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("SECONDS ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"{script}: {done.stderr[-2000:]}")
    return json.loads(line.removeprefix("SECONDS "))


def render_figures(label: str, http_uri: str, args, log_dir: Path) -> dict:
    """The page script's time on the server and, unless --no-browser, the render in Chromium, for
    this checkout and the dashboard at --old-rev side by side."""
    pages = {"this": REPO / "app" / "dashboard.py"}
    old = old_dashboard(args.old_rev, log_dir) if args.old_rev else None
    if old:
        pages["before"] = old
    result = {"server_script": server_figures(label, http_uri, pages, args)}
    if not args.no_browser:
        floor = log_dir / "baseline_page.py"
        floor.write_text(BASELINE_PAGE)
        serve = REPO / "app" / "serve.py"  # the same page, the store read as the server starts
        result["browser"] = browser_figures(label, http_uri, {**pages, "serve": serve, "floor": floor}, args, log_dir)
    return result


def _line(what: str, result: dict, kind: str, args, width: int) -> str:
    this = result["this"][kind]
    line = f"  {what:<{width}} this {this:5.2f} s"
    if "before" in result:
        before = result["before"][kind]
        result[f"{kind}_speedup"] = before / this
        line += f"   before ({args.old_rev}) {before:5.2f} s   {before / this:5.1f}x faster"
    if "serve" in result:
        line += f"   app/serve.py {result['serve'][kind]:5.2f} s"
    return line


def server_figures(label: str, http_uri: str, pages: dict[str, Path], args) -> dict:
    runs = {name: [] for name in pages}
    for _ in range(args.cold):
        for name, script in pages.items():
            runs[name].append(script_runs(http_uri, script, 1 + args.sessions))
    result = {name: {"cold": statistics.median(r[0][0] for r in found), "warm": statistics.median(own for r in found for _, own in r[1:]), "all_s": found} for name, found in runs.items()}
    print(f"page script on the server (AppTest, no browser), {label}, medians of {args.cold} processes x {1 + args.sessions} sessions:", flush=True)
    print(_line("new session (page's own time)", result, "warm", args, 30), flush=True)
    print(_line("first session of a process", result, "cold", args, 30), flush=True)
    return result


def browser_figures(label: str, http_uri: str, pages: dict[str, Path], args, log_dir: Path) -> dict:
    times = render_side_by_side(http_uri, pages, log_dir, cold=args.cold, sessions=args.sessions)
    figures = {}
    for index, (moment, until) in enumerate(MOMENTS.items()):
        result = {name: {kind: statistics.median(v[index] for v in values) for kind, values in kinds.items()} for name, kinds in times.items()}
        result["all_s"] = {name: {kind: [round(v[index], 2) for v in values] for kind, values in kinds.items()} for name, kinds in times.items()}
        print(f"page render in Chromium until {until}, {label}, fresh browser per session (medians; cold of {args.cold}, warm of {args.cold * args.sessions}):", flush=True)
        for kind, what in (("warm", "new session, warm server"), ("returning", "  same, browser seen it before"), ("cold", "first session, cold process")):
            print(_line(what, result, kind, args, 30) + f"   (floor {result['floor'][kind]:.2f} s)", flush=True)
        figures[moment] = result
    return figures


def scale_figures(size: str, args) -> dict:
    """A store of many runs (--scale 10000x20) behind `mlflow server`: a fresh `streamlit run
    app/dashboard.py` and the floor page, each opened by its first visitor, then once more (a new
    session of the warm server); seconds until the verdicts (the forest plot), the curve chart and
    the full page, and the peak resident memory of the dashboard's server process."""
    runs, epochs = (int(n) for n in size.lower().split("x"))
    floor = args.store / "baseline_page.py"
    floor.write_text(BASELINE_PAGE)
    result = {"runs": runs, "epochs": epochs}
    with mlflow_server(build_store(args.store / f"runs{runs}-epochs{epochs}.db", runs, epochs), workdir=args.store) as http_uri:
        for name, script in (("this", REPO / "app" / "dashboard.py"), ("floor", floor)):
            started: list = []
            with dashboard_server(http_uri, log_dir=args.store, script=script, started=started) as url:
                first = open_session(url, timeout_ms=600_000)
                again = open_session(url, timeout_ms=600_000)
                result[name] = {"first": first, "again": again, "peak_rss_mb": peak_rss(started[0].pid) / 2**20}
    this, base = result["this"], result["floor"]
    print(f"{runs} runs x {epochs} epochs behind mlflow server, fresh `streamlit run`, seconds until (first visitor | a new session of the warm server):", flush=True)
    for index, until in enumerate(MOMENTS.values()):
        print(f"  {until:<48} this {this['first'][index]:6.1f} | {this['again'][index]:5.1f}   floor {base['first'][index]:5.1f} | {base['again'][index]:5.1f}", flush=True)
    print(f"  peak resident memory of the streamlit process: this {this['peak_rss_mb']:.0f} MB, floor {base['peak_rss_mb']:.0f} MB", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "lrlab-bench")
    parser.add_argument("--render", action="append", default=[], metavar="RUNSxEPOCHS", help="experiment sizes for the page render (default 40x50 and 200x100)")
    parser.add_argument("--sessions", type=int, default=4, help="warm sessions per server start")
    parser.add_argument("--cold", type=int, default=2, help="fresh `streamlit run` starts per page")
    parser.add_argument("--old-rev", default=OLD_REV, help="git revision of the dashboard to compare with ('' for none)")
    parser.add_argument("--skip-loaders", action="store_true", help="only the page render")
    parser.add_argument("--no-browser", action="store_true", help="the page script's time only, no Chromium ('--render none': neither)")
    parser.add_argument("--scale", action="append", default=[], metavar="RUNSxEPOCHS", help="a large store's page: verdicts, chart, full page and server memory (e.g. 10000x20)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    # The machine may be shared: the ratios measured side by side hold, the seconds move with the load.
    results: dict = {"load_average_start": os.getloadavg()}
    print("load average (1, 5, 15 min) at the start: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()), flush=True)
    if not args.skip_loaders:
        db = args.store / f"runs{args.runs}-epochs{args.epochs}.db"
        sqlite_uri = build_store(db, args.runs, args.epochs)
        expected = args.runs * args.epochs * len(contract.EPOCH_METRICS)
        results.update({"runs": args.runs, "epochs": args.epochs, "metrics": len(contract.EPOCH_METRICS), "points": expected})
        print(f"store: {args.runs} runs x {args.epochs} epochs x {len(contract.EPOCH_METRICS)} metrics = {expected:,} points; median of {args.repeats}", flush=True)
        with mlflow_server(sqlite_uri, workdir=args.store) as http_uri:
            results["http"] = side_by_side("mlflow server (HTTP)", http_uri, args.repeats, expected)
            results["sqlite"] = side_by_side("SQLite store", sqlite_uri, args.repeats, expected)
            cache = history_cache.HistoryCache()
            cached_reload(http_uri, cache)
            seconds, _ = timed(cached_reload, http_uri, cache)
            results["cached_reload_s"] = seconds
            print(f"{'reload, all cached':<22} {seconds:7.2f} s (run search only; {cache.last.cached} runs from the cache)", flush=True)
    if args.render != ["none"]:
        results["render"] = {}
        for size in args.render or ["40x50", "200x100"]:
            runs, epochs = (int(n) for n in size.lower().split("x"))
            db = args.store / f"runs{runs}-epochs{epochs}.db"
            with mlflow_server(build_store(db, runs, epochs), workdir=args.store) as http_uri:
                label = f"{runs} runs x {epochs} epochs"
                results["render"][size] = render_figures(label, http_uri, args, args.store)
    results["scale"] = {size: scale_figures(size, args) for size in args.scale}
    results["load_average_end"] = os.getloadavg()
    print("load average (1, 5, 15 min) at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
