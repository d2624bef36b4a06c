"""The comparison dashboard: `streamlit run app/dashboard.py`.

Reads MLFLOW_TRACKING_URI (a SQLite file or an `mlflow server`; default the contract's).
The page is thin: it reads the settings (kept in the URL), loads through `app.page.loaders` (caches over `app.data`),
and lays out what `app.page.views` builds. Every failure of the store is a message on the page.
Run names, params and tags are shown as text only: tables, escaped captions, chart data.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from app import report
from app.analysis import curve_data, frames
from app.charts import builders as charts
from app.data import run_search, store
from app.page import comparison_view, export, loaders, runs_table, url_state, views, warmup
from train import contract

store.fail_fast()

LOG_SCALE_METRICS = {frames.split_metric(contract.LOSS)[0], views.LEARNING_RATE}
NO_FACET_LABEL = "(none)"
VIEWS = ["Runs", "LR sensitivity", "Schedules", "LR finder", "Groups", "Export"]


def plain(text) -> str:
    """Text for an element that renders Markdown, shown literally."""
    return report.markdown_text(text)


def main() -> None:
    st.set_page_config(page_title="LR lab: compare runs", layout="wide")
    state = st.session_state
    url_state.restore(state, st.query_params)
    state["_last_full_run"] = started = time.monotonic()
    uri = store.tracking_uri()
    key = store.store_key(uri)
    st.title("Learning rates, stages and schedules")
    st.caption(plain(f"Tracking store: {store.display_uri(uri)}"))
    url_note = url_state.note(state)
    if url_note:  # said once: the settings it replaced are the page's own from now on
        st.warning(plain(url_note), icon=":material/link:")
        state[url_state.NOTES] = []
    token = state.get("_tick", 0)
    try:
        experiments = loaders.experiments_of(key, token, uri)
    except store.StoreError as error:
        st.error(plain(error), icon="🚫")
        return
    if experiments.empty:
        st.info("This tracking store has no experiments yet. Train a model first: `python -m train --data demo`.")
        return
    names = experiments["name"].tolist()
    if not state["exp"] or not set(state["exp"]) & set(names):
        state["exp"] = run_search.default_experiments(names)
    state["exp"] = [name for name in state["exp"] if name in names]
    ids = tuple(experiments.loc[experiments["name"].isin(state["exp"]), "experiment_id"])
    runs_all = _search(key, uri, ids, token)
    filters = _filter_choices(runs_all) if runs_all is not None else {}
    chart, built = None, None
    if runs_all is not None and runs_all.empty:
        st.info("No runs in the chosen experiment(s) match. Start one (`python -m train --data demo`) or relax the MLflow filter.")
    elif runs_all is not None:
        chosen = {name: state[name] for name in frames.FILTER_COLUMNS}
        selected = frames.apply_filters(runs_all, chosen)
        if selected.empty:
            st.info("No runs match these filters.")
        else:
            chart = _chart_choices(selected, runs_all)
            # The answer first (from the run search alone), then the curve chart (the histories it
            # draws), then the chosen view (histories only if it needs them).
            built = _build(key, uri, selected, runs_all, chosen)
            if built is not None:
                _draw(built, built.options)
    # The sidebar comes last: its widgets hold the settings already used above (session state,
    # restored from the URL), and the browser draws the chart before the sidebar's widgets.
    _sidebar(names, filters, chart)
    _publish_url()
    if built is not None:
        _live(built, started)


def _search(key: str, uri: str, ids: tuple[str, ...], token: int) -> pd.DataFrame | None:
    """The runs of the chosen experiments that match the MLflow filter; None after a message."""
    query = st.session_state["q"].strip()
    try:
        return loaders.runs_of(key, ids, query, token, uri)
    except store.StoreError as error:
        if query and error.kind == "other":
            st.error(plain(f"The MLflow filter was refused: {error}"), icon="⚠️")
        else:
            st.error(plain(error), icon="🚫")
        return None


FILTER_LABELS = {"stage": "Stage", "model": "Model", "schedule": "Schedule", "lr": "Learning rate", "status": "Status", "data": "Dataset", "sweep": "Sweep"}
OPTIONAL_FILTERS = {"sweep"}  # empty for every run (no sweep): nothing worth a word


def _filter_choices(runs_all: pd.DataFrame) -> dict[str, list[str]]:
    """The values each sidebar filter offers; choices no longer among them are dropped."""
    state = st.session_state
    choices = {}
    for name in FILTER_LABELS:
        choices[name] = frames.filter_options(runs_all, name) if not runs_all.empty else []
        state[name] = [value for value in state[name] if value in choices[name]]
    return choices


def _chart_choices(selected: pd.DataFrame, runs_all: pd.DataFrame) -> dict[str, list[str]]:
    """The values each chart setting offers (metrics from the run search: no history needed);
    settings no longer among them fall back to a default."""
    state = st.session_state
    metrics = frames.logged_metrics(selected) or [url_state.SPEC["metric"][1]]
    if state["metric"] not in metrics:
        state["metric"] = metrics[0]
    params = frames.varying_params(runs_all) or [contract.PARAM_STAGE]
    facets = [frames.NO_FACET, *dict.fromkeys([contract.PARAM_STAGE, *params])]
    colors = list(dict.fromkeys([contract.PARAM_LR, *params]))
    all_params = sorted({name for p in runs_all["params"] for name in p})
    if not state.get(url_state.GROUP_FROM_URL) and not state.get("_group_decided"):
        state["_group_decided"] = True  # once per session: from then on the checkbox decides
        state["group"] = curve_data.has_repeats(selected, tuple(state["vary"]) or frames.REPEAT_PARAMS)
    if state["facet"] not in facets:
        state["facet"] = contract.PARAM_STAGE
    if state["color"] not in colors:
        state["color"] = contract.PARAM_LR
    state["vary"] = [name for name in state["vary"] if name in all_params] or [n for n in frames.REPEAT_PARAMS if n in all_params]
    state["smooth"] = min(max(float(state["smooth"]), 0.0), 0.95)
    if state["band"] not in (frames.MINMAX, frames.STD):
        state["band"] = frames.MINMAX
    state["top"] = min(max(int(state["top"]), 0), 100_000)  # a URL value the number input would refuse
    return {"metrics": metrics, "facets": facets, "colors": colors, "params": all_params}


def _curve_options() -> curve_data.CurveOptions:
    state = st.session_state
    return curve_data.CurveOptions(
        metric=state["metric"], smoothing=float(state["smooth"]), facet=state["facet"], color=state["color"],
        group=state["group"], vary=tuple(state["vary"]), band=state["band"], members=state["members"], join=state["join"], log_y=state["logy"],
        top=int(state["top"]),
    )  # fmt: skip


def _build(key: str, uri: str, selected: pd.DataFrame, runs_all: pd.DataFrame, chosen: dict[str, list[str]]):
    """The views of the selected runs, from the cache every session shares; None after a message."""
    state = st.session_state
    active = bool(selected["status"].isin(run_search.ACTIVE_STATUSES).any())
    try:
        return loaders.views_of(
            key, run_search.runs_version(runs_all), tuple((name, tuple(values)) for name, values in chosen.items()),
            dataclasses.astuple(_curve_options()), float(state["stale"] * 60), int(time.time() // 30) if active else 0,
            store.ui_base_url(uri), uri, selected, runs_all,
        )  # fmt: skip
    except store.StoreError as error:
        st.error(plain(error), icon="🚫")
        return None


def _sidebar(experiments: list[str], filters: dict[str, list[str]], chart: dict[str, list[str]] | None) -> None:
    """Experiments, the MLflow filter and the filters over the found runs' values; then, when there
    are runs to draw, the chart settings and live refresh."""
    state = st.session_state
    with st.sidebar:
        st.header("Runs")
        st.multiselect("Experiments", experiments, key="exp")
        st.text_input("MLflow filter", key="q", placeholder="params.optimizer = 'adam' and metrics.best_val_accuracy > 0.8", help="Any MLflow search filter; applied by the tracking server.")
        st.button("Reload runs", help="Read the run list again (it is cached for a minute).", on_click=_reload)
        same = {}
        for name, options in filters.items():
            if len(options) > 1 or state[name]:
                st.multiselect(FILTER_LABELS[name], options, key=name, placeholder="all")
            elif options and (options[0] or name not in OPTIONAL_FILTERS):
                same[FILTER_LABELS[name].lower()] = options[0]
        if same:  # a filter with one value to offer filters nothing: say the value instead
            st.caption(plain("The same for every run: " + "; ".join(f"{label} {value or '(empty)'}" for label, value in same.items())))
        if chart is None:
            return
        st.header("Chart")
        st.selectbox("Metric", chart["metrics"], key="metric", on_change=_metric_changed)
        st.slider("Smoothing (EMA)", 0.0, 0.95, step=0.05, key="smooth", help="TensorBoard-style exponential moving average; the raw line stays faint.")
        st.checkbox("Log-scale y", key="logy")
        st.selectbox("Columns by", chart["facets"], key="facet", format_func=lambda name: name or NO_FACET_LABEL, help="One chart column per value of this parameter.")
        st.selectbox("Colour by", chart["colors"], key="color", help="Learning rate uses one ordered palette everywhere.")
        comparison_view.statistic_selector()
        st.checkbox("Average repeats (mean and band)", key="group", help="Runs that differ only in the parameters below are drawn as one mean line.")
        if state["group"]:
            st.multiselect("Repeats differ in", chart["params"], key="vary")
            st.radio("Band", [frames.MINMAX, frames.STD], key="band", horizontal=True)
            st.checkbox("Show member runs", key="members")
        st.checkbox("Continue fine-tuning from its head run", key="join", help="A run with an init_run_id tag is drawn after the run whose model it started from.")
        st.number_input(
            "Curves of at most this many runs (0 = all)", min_value=0, max_value=100_000, step=10, key="top",
            help="Without averaging, the chart draws the runs of best validation accuracy first; the table lists every run. "
            "Hundreds of curves take the browser seconds to draw.",
        )  # fmt: skip
        st.header("Live")
        st.checkbox("Auto-refresh while runs are running", key="live")
        if state["live"]:
            st.number_input("Every (seconds)", min_value=5, max_value=3600, step=5, key="every")
        st.number_input("Stale after (minutes without a metric)", min_value=1, max_value=10_000, key="stale")


def _reload() -> None:
    st.session_state["_tick"] = st.session_state.get("_tick", 0) + 1


def _metric_changed() -> None:
    st.session_state["logy"] = st.session_state["metric"] in LOG_SCALE_METRICS


def _publish_url() -> None:
    query = url_state.to_query(st.session_state)
    if query != {key: (st.query_params.get_all(key) if isinstance(value, list) else st.query_params.get(key)) for key, value in query.items()} or set(st.query_params) - set(query):
        st.query_params.from_dict(query)


def _draw(built: views.Views, options: curve_data.CurveOptions) -> None:
    """The page below the title: notes and the answer, the curve chart, then the chosen view. A
    store failure while a view reads its histories is a message in its place."""
    _state_notes(built)
    comparison_view.answer(built)  # "is the difference real?", per stage, above the chart
    try:
        _curves(built, options)
    except store.StoreError as error:
        st.error(plain(error), icon="🚫")
    # One view at a time: only what is looked at is sent to the browser and drawn.
    if st.session_state["view"] not in VIEWS:
        st.session_state["view"] = VIEWS[0]
    view = st.radio("View", VIEWS, key="view", horizontal=True, label_visibility="collapsed")
    try:
        _view(built, view)
    except store.StoreError as error:
        st.error(plain(error), icon="🚫")


def _curves(built: views.Views, options: curve_data.CurveOptions) -> None:
    """The curve chart and what it leaves out."""
    spec = built.page_spec("curves")  # waits while another session (or the warm-up) builds it
    if spec is None:
        st.info(plain(f"None of the {len(built.drawn)} run(s) drawn has logged {options.metric} yet."))
        return
    _chart(spec)
    for note in built.notes:  # about what the chart draws (a joined run's missing predecessor)
        st.warning(note)
    if built.hidden:
        st.caption(
            f"Drawing the {len(built.drawn)} runs of best validation accuracy; {built.hidden} more are in the table. "
            "Raise “Curves of at most” in the sidebar (0 = all) or filter the runs to draw others."
        )
    if options.group:
        _group_sample_note(built.group_sample[1])
        st.caption(views.GROUP_LABEL_NOTE)
    stuck = built.at_chance
    if not stuck.empty:
        st.caption(plain(
            f"{len(stuck)} run(s) never left chance (1 / {round(1 / built.chance)} classes = {built.chance:.3f}, the dashed line): "
            f"they learned nothing, whatever their rank ({', '.join(stuck['run'].astype(str).head(5))}{', …' if len(stuck) > 5 else ''}). "
            "A random base (weights=none) frozen or trained from scratch too briefly stays there."
        ))  # fmt: skip
    if built.thinned:
        st.caption(
            f"Curves longer than {charts.PAGE_MAX_POINTS} points are drawn thinned (per stretch of epochs the lowest and highest "
            "value, and the first, last and best points); exports and CSVs hold every point."
        )


def _group_sample_note(sample: dict) -> None:
    """One caption when the grouped curves draw a sample (`views.Views.group_sample`)."""
    parts = []
    if sample["largest"] > sample["largest_drawn"]:
        parts.append(f"each line is the mean of at most {sample['largest_drawn']} of its configuration's runs (the lowest seeds; up to {sample['largest']} runs here)")
    if sample["groups_drawn"] < sample["groups"]:
        parts.append(f"each column draws its {views.GROUPS_DRAWN} best configurations ({sample['groups_drawn']} of {sample['groups']} drawn; all in the Groups view)")
    if parts:
        st.caption("; ".join(parts).capitalize() + "; the verdicts above use every run.")


def _view(built: views.Views, view: str) -> None:
    if view == "Runs":
        st.caption("Every selected run, the best validation accuracy first; open one in MLflow from its last column.")
        runs_table.show(built.summary)
    elif view == "LR sensitivity":
        st.caption("Per stage, each learning rate's best validation accuracy (left) and train − validation gap (right), over its seeds; colour = learning rate as on every chart.")
        comparison_view.sensitivity(built)
    elif view == "Schedules":
        st.caption("The learning rate each run of the curve chart trained at, epoch by epoch, a column per schedule.")
        _chart_or_note(built.page_spec("schedule"), "No run logged its learning rate per epoch. Compare schedules with `python -m sweep --plan schedules`.")
    elif view == "LR finder":
        st.caption("Learning-rate range tests: loss against a rising rate, each test's suggested rate as a dashed rule.")
        _chart_or_note(built.page_spec("lr_finder"), "No learning-rate range test among the selected runs. Run one with `mlflow run . -e lr_find -P data=demo` (or `python -m train.tools.lr_find`).")
    elif view == "Groups":
        st.caption("Every configuration (its runs over seeds): verdict against its stage's best, n, mean and 95% intervals.")
        comparison_view.groups_table(built)
    else:
        export.show(built, store.tracking_uri(), list(st.session_state["exp"]))


def _chart(spec: dict) -> None:
    """A chart in its page form (`app.charts.spec.page_spec`: data inline in the JSON), at its own size."""
    st.vega_lite_chart(spec, theme=None, width="content")


def _chart_or_note(spec: dict | None, note: str) -> None:
    if spec is None:
        st.info(note)
    else:
        _chart(spec)


def _state_notes(built: views.Views) -> None:
    no_metrics, without_val, stale = built.state_counts
    ended = built.ended_without_metrics
    if no_metrics - ended:
        st.caption(f"{no_metrics - ended} run(s) have no metrics yet; they are listed in the table.")
    if ended:
        st.caption(f"{ended} run(s) ended (failed or killed) before logging a metric; they are listed in the table with their stop reason.")
    if without_val:
        st.caption(f"{without_val} run(s) logged no validation metrics; only their train curves are drawn.")
    if stale:
        st.warning(f"{stale} run(s) are RUNNING but have logged nothing for over {st.session_state['stale']} min: their process is probably gone (shown as STALE).")


def _live(built: views.Views, started: float) -> None:
    """Re-run the page on the chosen interval while a selected run is RUNNING (and not stale)."""
    state = st.session_state
    running = int((built.summary["state"] == "RUNNING").sum()) if not built.summary.empty else 0
    stats = built.load_stats
    # For the benchmark and the tests, not the reader: how this page was served (never drawn).
    state["_served"] = {
        "built_at": built.built_at, "build_seconds": built.build_seconds, "full": stats.full, "incremental": stats.incremental,
        "extended": stats.extended, "cached": stats.cached, "points": stats.points, "load_seconds": stats.seconds, "page_seconds": time.monotonic() - started,
    }  # fmt: skip
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


if __name__ == "__main__":  # a run of the page: Streamlit's script runner (and AppTest) run it as __main__
    try:
        main()
    except Exception as error:  # noqa: BLE001 - the last guard: a message, never a traceback
        if type(error).__module__.startswith("streamlit"):
            raise  # Streamlit's own control flow (rerun, stop)
        st.error(plain(f"The dashboard hit an unexpected error: {type(error).__name__}: {error}"), icon="🐞")
else:
    # `streamlit run app/dashboard.py` finds this ASGI app and serves the page through it: its start-up
    # hook (app/page/warmup.py) imports what the page needs and reads the store while the server starts, so
    # the first visitor waits for neither.
    app = st.App(str(Path(__file__).resolve()), lifespan=warmup.lifespan)
