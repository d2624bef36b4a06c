"""The comparison dashboard: `streamlit run app/dashboard.py`.

Reads MLFLOW_TRACKING_URI (a SQLite file or an `mlflow server`; default the contract's).
The page is thin: it reads the settings (kept in the URL), loads through `app.queries`,
and lays out what `app.views` builds. Every failure of the store is a message on the page.
Run names, params and tags are shown as text only: tables, escaped captions, chart data.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `streamlit run app/dashboard.py` puts app/, not the repo root, on the path
    sys.path.insert(0, _ROOT)

import os  # noqa: E402
import time  # noqa: E402

# A dashboard should say "server down" in seconds, not after MLflow's minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import frames, queries, report, url_state, views  # noqa: E402
from train import contract  # noqa: E402

LOG_SCALE_METRICS = {frames.split_metric(contract.LOSS)[0], views.LEARNING_RATE}
NO_FACET_LABEL = "(none)"
VIEWS = ["Runs", "LR sensitivity", "Schedules", "LR finder", "Groups", "Export"]


@st.cache_resource(show_spinner=False)
def client_for(uri: str):
    return queries.open_client(uri)


@st.cache_resource(show_spinner=False)
def history_cache_for(uri: str) -> queries.HistoryCache:
    return queries.HistoryCache()


@st.cache_data(show_spinner=False, ttl=60)
def experiments_of(uri: str, token: int) -> pd.DataFrame:
    try:
        return queries.list_experiments(client_for(uri))
    except Exception as error:  # noqa: BLE001
        raise queries.explain(error, uri) from None


@st.cache_data(show_spinner=False, ttl=60, max_entries=64)
def runs_of(uri: str, experiment_ids: tuple[str, ...], filter_string: str, token: int) -> pd.DataFrame:
    try:
        return queries.search_runs(client_for(uri), list(experiment_ids), filter_string)
    except Exception as error:  # noqa: BLE001
        raise queries.explain(error, uri) from None


def plain(text) -> str:
    """Text for an element that renders Markdown, shown literally."""
    return report.markdown_text(text)


def main() -> None:
    st.set_page_config(page_title="LR lab: compare runs", layout="wide")
    state = st.session_state
    url_state.restore(state, st.query_params)
    state["_last_full_run"] = started = time.monotonic()
    uri = queries.tracking_uri()
    st.title("Learning rates, stages and schedules")
    st.caption(plain(f"Tracking store: {queries.display_uri(uri)}"))
    token = state.get("_tick", 0)
    try:
        experiments = experiments_of(uri, token)
    except queries.StoreError as error:
        st.error(plain(error), icon="🚫")
        return
    if experiments.empty:
        st.info("This tracking store has no experiments yet. Train a model first: `python -m train --data demo`.")
        return
    runs_all = _pick_runs(uri, experiments, token)
    if runs_all is None:
        return
    _publish_url()
    if runs_all.empty:
        st.info("No runs in the chosen experiment(s) match. Start one (`python -m train --data demo`) or relax the MLflow filter.")
        return
    selected = frames.apply_filters(runs_all, {key: state[key] for key in frames.FILTER_COLUMNS})
    if selected.empty:
        st.info("No runs match these filters.")
        return
    loaded = _load_history(uri, selected, runs_all)
    if loaded is None:
        return
    history, known = loaded
    options = _chart_settings(selected, runs_all, history)
    _publish_url()
    now_ms = time.time() * 1000
    built = views.build(selected, history, options, all_runs=known, now_ms=now_ms, stale_after_s=state["stale"] * 60, ui_base=queries.ui_base_url(uri))
    _draw(built, selected, history, options)
    _live(built, started)


def _pick_runs(uri, experiments: pd.DataFrame, token: int):
    """Sidebar: experiments, the MLflow filter, then filters over the found runs' values."""
    state = st.session_state
    names = experiments["name"].tolist()
    if not state["exp"] or not set(state["exp"]) & set(names):
        state["exp"] = [contract.DEFAULT_EXPERIMENT] if contract.DEFAULT_EXPERIMENT in names else names[:1]
    state["exp"] = [name for name in state["exp"] if name in names]
    with st.sidebar:
        st.header("Runs")
        st.multiselect("Experiments", names, key="exp")
        st.text_input("MLflow filter", key="q", placeholder="params.optimizer = 'adam' and metrics.best_val_accuracy > 0.8", help="Any MLflow search filter; applied by the tracking server.")
        if st.button("Reload runs", help="Read the run list again (it is cached for a minute)."):
            state["_tick"] = token + 1
            st.rerun()
    ids = tuple(experiments.loc[experiments["name"].isin(state["exp"]), "experiment_id"])
    try:
        runs_all = runs_of(uri, ids, state["q"].strip(), token)
    except queries.StoreError as error:
        if state["q"].strip() and error.kind == "other":
            st.error(plain(f"The MLflow filter was refused: {error}"), icon="⚠️")
        else:
            st.error(plain(error), icon="🚫")
        return None
    with st.sidebar:
        for key, label in (("stage", "Stage"), ("model", "Model"), ("schedule", "Schedule"), ("lr", "Learning rate"), ("status", "Status"), ("data", "Dataset")):
            options = frames.filter_options(runs_all, key) if not runs_all.empty else []
            state[key] = [value for value in state[key] if value in options]
            st.multiselect(label, options, key=key, placeholder="all")
    return runs_all


def _load_history(uri, selected: pd.DataFrame, runs_all: pd.DataFrame):
    """Histories of the selected runs and, when continuing runs, of the runs they started from.

    Returns (history, the runs the views may refer to), or None after showing a message.
    """
    wanted, known = selected, runs_all
    try:
        client = client_for(uri)
        if st.session_state["join"]:
            ancestors, _ = queries.predecessors(client, selected, runs_all)
            wanted = pd.concat([selected, ancestors], ignore_index=True).drop_duplicates("run_id")
            known = pd.concat([runs_all, ancestors], ignore_index=True).drop_duplicates("run_id")
        raw = history_cache_for(uri).load(client, wanted)
    except Exception as error:  # noqa: BLE001 - a store failure is a message, never a traceback
        st.error(plain(queries.explain(error, uri)), icon="🚫")
        return None
    return frames.tidy_history(raw, wanted), known


def _chart_settings(selected: pd.DataFrame, runs_all: pd.DataFrame, history: pd.DataFrame) -> frames.CurveOptions:
    state = st.session_state
    metrics = frames.chart_metrics(history) or [url_state.SPEC["metric"][1]]
    if state["metric"] not in metrics:
        state["metric"] = metrics[0]
    params = frames.varying_params(runs_all) or [contract.PARAM_STAGE]
    facets = [frames.NO_FACET, *dict.fromkeys([contract.PARAM_STAGE, *params])]
    colors = list(dict.fromkeys([contract.PARAM_LR, *params]))
    all_params = sorted({name for p in runs_all["params"] for name in p})
    if state["facet"] not in facets:
        state["facet"] = contract.PARAM_STAGE
    if state["color"] not in colors:
        state["color"] = contract.PARAM_LR
    state["vary"] = [name for name in state["vary"] if name in all_params] or [n for n in frames.REPEAT_PARAMS if n in all_params]
    state["smooth"] = min(max(float(state["smooth"]), 0.0), 0.95)
    if state["band"] not in (frames.MINMAX, frames.STD):
        state["band"] = frames.MINMAX
    with st.sidebar:
        st.header("Chart")
        st.selectbox("Metric", metrics, key="metric", on_change=_metric_changed)
        st.slider("Smoothing (EMA)", 0.0, 0.95, step=0.05, key="smooth", help="TensorBoard-style exponential moving average; the raw line stays faint.")
        st.checkbox("Log-scale y", key="logy")
        st.selectbox("Columns by", facets, key="facet", format_func=lambda name: name or NO_FACET_LABEL, help="One chart column per value of this parameter.")
        st.selectbox("Colour by", colors, key="color", help="Learning rate uses one ordered palette everywhere.")
        st.checkbox("Average repeats (mean and band)", key="group", help="Runs that differ only in the parameters below are drawn as one mean line.")
        if state["group"]:
            st.multiselect("Repeats differ in", all_params, key="vary")
            st.radio("Band", [frames.MINMAX, frames.STD], key="band", horizontal=True)
            st.checkbox("Show member runs", key="members")
        st.checkbox("Continue fine-tuning from its head run", key="join", help="A run with an init_run_id tag is drawn after the run whose model it started from.")
        st.header("Live")
        st.checkbox("Auto-refresh while runs are running", key="live")
        st.number_input("Every (seconds)", min_value=5, max_value=3600, step=5, key="every")
        st.number_input("Stale after (minutes without a metric)", min_value=1, max_value=10_000, key="stale")
    return frames.CurveOptions(
        metric=state["metric"], smoothing=float(state["smooth"]), facet=state["facet"], color=state["color"],
        group=state["group"], vary=tuple(state["vary"]), band=state["band"], members=state["members"], join=state["join"], log_y=state["logy"],
    )  # fmt: skip


def _metric_changed() -> None:
    st.session_state["logy"] = st.session_state["metric"] in LOG_SCALE_METRICS


def _publish_url() -> None:
    query = url_state.to_query(st.session_state)
    if query != {key: (st.query_params.get_all(key) if isinstance(value, list) else st.query_params.get(key)) for key, value in query.items()} or set(st.query_params) - set(query):
        st.query_params.from_dict(query)


def _draw(built: views.Views, selected: pd.DataFrame, history: pd.DataFrame, options: frames.CurveOptions) -> None:
    for note in built.notes:
        st.warning(note)
    _state_notes(built, selected, history)
    if built.curves.points.empty:
        st.info(plain(f"None of the {len(built.summary)} run(s) has logged {options.metric} yet."))
    else:
        st.altair_chart(built.curves_chart, theme=None, width="content" if options.facet else "stretch")
    # One view at a time: only what is looked at is sent to the browser and drawn.
    if st.session_state["view"] not in VIEWS:
        st.session_state["view"] = VIEWS[0]
    view = st.radio("View", VIEWS, key="view", horizontal=True, label_visibility="collapsed")
    if view == "Runs":
        _summary_table(built.summary)
    elif view == "LR sensitivity":
        _chart_or_note(built.sensitivity_chart, "No run has a best validation accuracy yet.")
    elif view == "Schedules":
        _chart_or_note(built.schedule_chart, "No run logged its learning rate per epoch.")
    elif view == "LR finder":
        _chart_or_note(built.lr_finder_chart, "No lr-finder run (tag kind=lr_find) among the selected runs.")
    elif view == "Groups":
        if built.curves.groups.empty:
            st.info("Turn on “Average repeats” to see which runs each mean line averages.")
        else:
            st.dataframe(built.curves.groups[["group", "n_runs", "runs"]], hide_index=True, width="stretch")
    else:
        _export(built, queries.tracking_uri(), list(st.session_state["exp"]))


def _chart_or_note(chart, note: str) -> None:
    if chart is None:
        st.info(note)
    else:
        st.altair_chart(chart, theme=None, width="content")


def _state_notes(built: views.Views, selected: pd.DataFrame, history: pd.DataFrame) -> None:
    summary = built.summary
    no_metrics = summary["epochs"].isna().sum() if not summary.empty else 0
    if no_metrics:
        st.caption(f"{no_metrics} run(s) have no metrics yet; they are listed in the table.")
    with_val = set(history.loc[history["split"] == frames.VALIDATION, "run_id"])
    without_val = [r for r in summary["run_id"] if r not in with_val and r in set(history["run_id"])]
    if without_val:
        st.caption(f"{len(without_val)} run(s) logged no validation metrics; only their train curves are drawn.")
    stale = int((summary["state"] == "STALE").sum()) if not summary.empty else 0
    if stale:
        st.warning(f"{stale} run(s) are RUNNING but have logged nothing for over {st.session_state['stale']} min: their process is probably gone (shown as STALE).")


def _summary_table(summary: pd.DataFrame) -> None:
    if summary.empty:
        st.info("No training runs selected.")
        return
    st.dataframe(
        summary.drop(columns=["run_id"]),
        hide_index=True,
        width="stretch",
        column_config={
            "run": st.column_config.TextColumn("run", pinned=True),
            "lr": st.column_config.NumberColumn("lr", format="%.0e"),
            "best_val_accuracy": st.column_config.NumberColumn("best val acc", format="%.4f"),
            "best_epoch": st.column_config.NumberColumn("best epoch", format="%d"),
            "final_accuracy": st.column_config.NumberColumn("final train acc", format="%.4f"),
            "final_val_accuracy": st.column_config.NumberColumn("final val acc", format="%.4f"),
            "final_loss": st.column_config.NumberColumn("final train loss", format="%.4f"),
            "final_val_loss": st.column_config.NumberColumn("final val loss", format="%.4f"),
            "gap": st.column_config.NumberColumn("gap", format="%.4f", help="Train minus validation accuracy at the best epoch."),
            "epochs": st.column_config.NumberColumn("epochs", format="%d"),
            "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
            "images_per_second": st.column_config.NumberColumn("images/s", format="%.0f"),
            "last_activity": st.column_config.DatetimeColumn("last metric", format="YYYY-MM-DD HH:mm"),
            "url": st.column_config.LinkColumn("MLflow", display_text="open run"),
        },
    )


def _live(built: views.Views, started: float) -> None:
    """Re-run the page on the chosen interval while a selected run is RUNNING (and not stale)."""
    state = st.session_state
    running = int((built.summary["state"] == "RUNNING").sum()) if not built.summary.empty else 0
    stats = history_cache_for(queries.tracking_uri()).last
    with st.sidebar:
        st.caption(
            f"Last load: {stats.cached} run(s) from cache, {stats.full} read whole, {stats.incremental} re-read from their last step "
            f"({stats.seconds:.2f} s); page built in {time.monotonic() - started:.2f} s."
        )
    if not (state["live"] and running):
        return
    interval = int(state["every"])
    st.sidebar.caption(f"Live: {running} run(s) running; refreshing every {interval} s.")

    @st.fragment(run_every=interval)
    def ticker():
        if time.monotonic() - state.get("_last_full_run", 0) >= interval * 0.9:
            state["_tick"] = state.get("_tick", 0) + 1
            st.rerun()

    ticker()


def _export(built: views.Views, uri: str, experiments: list[str]) -> None:
    """SVG and PNG of every chart rendered on the server, the plotted points as CSV, a report."""
    state = st.session_state
    filters = {key: state[key] for key in (*frames.FILTER_COLUMNS, "q") if state.get(key)}
    context = report.context_lines(uri, experiments, {**filters, "metric": state["metric"], "smoothing": state["smooth"]})
    title = f"Learning-rate study: {', '.join(experiments)}"
    figures = built.figures()
    st.caption("Figures are rendered on the server (vl-convert); CSVs hold the exact plotted points, raw and smoothed.")
    for figure in figures:
        columns = st.columns([3, 1, 1, 1])
        columns[0].text(figure.title)
        columns[1].download_button("SVG", data=lambda f=figure: report.to_svg(f.chart), file_name=f"{figure.name}.svg", mime="image/svg+xml", key=f"svg-{figure.name}", on_click="ignore")
        columns[2].download_button("PNG", data=lambda f=figure: report.to_png(f.chart), file_name=f"{figure.name}.png", mime="image/png", key=f"png-{figure.name}", on_click="ignore")
        columns[3].download_button("CSV", data=lambda f=figure: report.to_csv(f.data), file_name=f"{figure.name}.csv", mime="text/csv", key=f"csv-{figure.name}", on_click="ignore")
    st.download_button("Summary table (CSV)", data=report.to_csv(built.summary), file_name="summary.csv", mime="text/csv", on_click="ignore")
    left, right = st.columns(2)
    left.download_button(
        "Report (HTML, figures inline)", data=lambda: report.report_html(title, figures, built.summary, context),
        file_name="report.html", mime="text/html", type="primary", on_click="ignore",
    )  # fmt: skip
    right.download_button(
        "Report (Markdown + figures, zip)", data=lambda: report.report_zip(title, figures, built.summary, context),
        file_name="report.zip", mime="application/zip", on_click="ignore",
    )  # fmt: skip


try:
    main()
except Exception as error:  # noqa: BLE001 - the last guard: a message, never a traceback
    if type(error).__module__.startswith("streamlit"):
        raise  # Streamlit's own control flow (rerun, stop)
    st.error(plain(f"The dashboard hit an unexpected error: {type(error).__name__}: {error}"), icon="🐞")
