"""The dashboard's loaders: Streamlit caches over `app.data`, shared by every session.

A store failure inside a loader comes out as a `store.StoreError`, one line for the page.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app.analysis import curve_data
from app.data import history_cache, run_search, store
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


@st.cache_resource(show_spinner=False, max_entries=16, ttl=3600)
def views_of(key: str, version: str, filters: tuple, options: tuple, stale_after_s: float, clock: int, ui_base: str, _uri: str, _selected, _runs_all) -> views.Views:
    """What the page shows of the selected runs, built once per fingerprint of the runs (`version`)
    and settings, and shared by every session (`first_chart.cached_views`: the warm-up's when it
    built the same). The answer is computed; the curve chart and the other views read their
    histories when first drawn. `clock` moves on while a selected run is active (its state and
    duration depend on the time); it is 0 otherwise."""
    started = time.monotonic()
    try:
        built = first_chart.cached_views(
            key, client_for(key, _uri), history_cache.shared_history_cache(key), _selected, _runs_all, curve_data.CurveOptions(*options),
            clock=clock, uri=_uri, now_ms=time.time() * 1000, stale_after_s=stale_after_s, ui_base=ui_base,
        )  # fmt: skip
    except store.StoreError:
        raise
    except Exception as error:  # noqa: BLE001 - a store failure is a message, never a traceback
        raise store.explain(error, _uri) from None
    if not built.built_at:  # built here, not by the warm-up
        built.build_seconds, built.built_at = time.monotonic() - started, time.strftime("%H:%M:%S")
    return built
