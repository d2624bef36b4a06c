"""The dashboard's loaders: Streamlit caches over `app.data`, shared by every session.

A store failure inside a loader comes out as a `store.StoreError`, one line for the page.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app.analysis import curve_data, frames
from app.data import histories, run_search, store
from app.page import first_chart, views, warmup

# Every cache below is shared by all sessions of the process and keyed on `store.store_key`: the
# store and the credentials reading it. The run search is asked again after a minute (or on "Reload
# runs", or by live refresh); everything built from the runs is keyed on their fingerprint
# (`run_search.runs_version`: states, params, tags and each run's latest update), so a new session,
# and a reload that finds nothing new, reads no history and builds no chart.


@st.cache_resource(show_spinner=False)
def client_for(key: str, _uri: str):
    return store.open_client(_uri)


@st.cache_data(show_spinner=False, ttl=60)
def experiments_of(key: str, token: int, _uri: str) -> pd.DataFrame:
    try:
        return run_search.list_experiments(client_for(key, _uri))
    except Exception as error:  # noqa: BLE001
        raise store.explain(error, _uri) from None


@st.cache_data(show_spinner=False, ttl=60, max_entries=64)
def runs_of(key: str, experiment_ids: tuple[str, ...], filter_string: str, token: int, _uri: str) -> pd.DataFrame:
    early = warmup.searched(key, experiment_ids) if not filter_string else None
    if early is not None:  # the server's warm-up searched these a moment ago
        return early
    try:
        return run_search.search_runs(client_for(key, _uri), list(experiment_ids), filter_string)
    except Exception as error:  # noqa: BLE001
        raise store.explain(error, _uri) from None


@st.cache_resource(show_spinner=False, max_entries=4, ttl=3600)
def history_of(key: str, version: str, filters: tuple, join: bool, _uri: str, _selected, _runs_all):
    """The selected runs' histories (tidy), and with `join` those of the runs they continue from:
    (history, the runs to draw from, every run the views may refer to). One copy for all sessions
    and settings of the same runs."""
    try:
        client = client_for(key, _uri)
        wanted, known = _selected, _runs_all
        if join:
            ancestors, _ = run_search.predecessors(client, _selected, _runs_all)
            wanted = pd.concat([_selected, ancestors], ignore_index=True).drop_duplicates("run_id")
            known = pd.concat([_runs_all, ancestors], ignore_index=True).drop_duplicates("run_id")
        cache = histories.shared_history_cache(key)
        raw = cache.load(client, wanted)
    except Exception as error:  # noqa: BLE001 - a store failure is a message, never a traceback
        raise store.explain(error, _uri) from None
    return frames.tidy_history(raw, wanted), known, cache.last


@st.cache_resource(show_spinner=False, max_entries=16, ttl=3600)
def views_of(key: str, version: str, filters: tuple, options: tuple, stale_after_s: float, clock: int, ui_base: str, _uri: str, _selected, _runs_all) -> views.Views:
    """What the page shows of the selected runs, built once per fingerprint of the runs (`version`)
    and settings, and shared by every session. `clock` moves on while a selected run is active (its
    state and duration depend on the time); it is 0 otherwise."""
    started = time.monotonic()
    curve_options = curve_data.CurveOptions(*options)
    history, known, load_stats = history_of(key, version, filters, curve_options.join, _uri, _selected, _runs_all)
    built = views.build(_selected, history, curve_options, all_runs=known, now_ms=time.time() * 1000, stale_after_s=stale_after_s, ui_base=ui_base).prepare()
    built.load_stats, built.build_seconds, built.built_at = load_stats, time.monotonic() - started, time.strftime("%H:%M:%S")
    return built


@st.cache_resource(show_spinner=False, max_entries=16, ttl=3600)
def first_chart_of(key: str, version: str, filters: tuple, options: tuple, stale_after_s: float, clock: int, ui_base: str, _uri: str, _selected, _runs_all) -> dict | None:
    """The curve chart alone, from the few histories it draws (`app.page.first_chart`), keyed as
    `views_of`: the page draws it before it reads the rest. None when it cannot be built: the full
    views that follow say why."""
    try:
        cache = histories.shared_history_cache(key)
        return first_chart.cached_spec(
            key, client_for(key, _uri), cache, _selected, _runs_all, curve_data.CurveOptions(*options), now_ms=time.time() * 1000, stale_after_s=stale_after_s, ui_base=ui_base
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - the full load that follows reports a store failure on the page
        return None
