"""The curve chart first: what the page's first screen needs, read before everything else.

The runs table needs every history of the experiment (7 metrics per run); the curve chart needs
far less: the chart's metric, train and validation, of the runs it draws, and validation accuracy
where a run logged no `best_val_accuracy` yet (to rank the runs and mark their best epoch).
`chart_spec` reads only that through the shared history cache and builds the very chart the full
views build (`views.Views.page_spec("curves")`), so the page draws it and then reads the rest;
the cache then reads only the keys it does not hold yet.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

import pandas as pd

from app.analysis import curve_data, frames
from app.data import run_search
from app.page import url_state, views
from train import contract


def needed_keys(metric: str) -> list[str]:
    """The history keys the curve chart of `metric` reads: its train and validation keys, and the
    validation accuracy that ranks runs and places each run's best epoch."""
    return list(dict.fromkeys([metric, f"{frames.VAL_PREFIX}{metric}", contract.VAL_ACCURACY]))


# The charts built last, by (store and reader, the runs, the options, the UI's address): the warm-up
# builds the default view's so that the first visitor finds it ready. A few only: the page's own
# cache (`loaders.first_chart_of`) keeps them for every later session.
_BUILT: OrderedDict[tuple, dict | None] = OrderedDict()
_BUILT_MAX = 4
_BUILT_LOCK = threading.Lock()
_BUILDING: dict[tuple, threading.Event] = {}  # memo keys being built, set when done


def cached_spec(key: str, client, cache, selected: pd.DataFrame, runs_all: pd.DataFrame, options: curve_data.CurveOptions, **kwargs) -> dict | None:
    """`chart_spec`, or the very one built before for the same store, runs and options; while another
    thread builds that one (the warm-up, as the first visitor arrives), wait for it instead."""
    memo = (key, run_search.runs_version(selected), run_search.runs_version(runs_all), dataclasses.astuple(options), kwargs.get("ui_base"))
    with _BUILT_LOCK:
        building = _BUILDING.get(memo)
        if building is None and memo not in _BUILT:
            _BUILDING[memo] = threading.Event()
    if building is not None:
        building.wait(timeout=60)
    with _BUILT_LOCK:
        if memo in _BUILT:
            return _BUILT[memo]
    try:
        spec = chart_spec(client, cache, selected, runs_all, options, **kwargs)
        with _BUILT_LOCK:
            _BUILT[memo] = spec
            while len(_BUILT) > _BUILT_MAX:
                _BUILT.popitem(last=False)
        return spec
    finally:
        with _BUILT_LOCK:
            done = _BUILDING.pop(memo, None)
        if done is not None:
            done.set()


def default_options(runs_all: pd.DataFrame) -> curve_data.CurveOptions:
    """The options of a page opened without settings in its URL (`url_state.SPEC`'s defaults, as
    the page's `_chart_choices` applies them to these runs)."""
    defaults = {name: default for name, (_, default) in url_state.SPEC.items()}
    params = {name for params in runs_all["params"] for name in params}
    vary = tuple(n for n in defaults["vary"] if n in params) or tuple(n for n in frames.REPEAT_PARAMS if n in params)
    return curve_data.CurveOptions(
        metric=defaults["metric"], smoothing=float(defaults["smooth"]), facet=defaults["facet"], color=defaults["color"], group=curve_data.has_repeats(runs_all, vary),
        vary=vary, band=defaults["band"], members=defaults["members"], join=defaults["join"], log_y=defaults["logy"], top=int(defaults["top"]),
    )  # fmt: skip


def chart_spec(client, cache, selected: pd.DataFrame, runs_all: pd.DataFrame, options: curve_data.CurveOptions, *, now_ms: float, stale_after_s: float, ui_base: str) -> dict | None:
    """The curve chart of `selected` in its page form, from the few histories it draws; None when
    no run has logged the metric yet (the full views say so)."""
    wanted, known = selected, runs_all
    if options.join:
        ancestors, _ = run_search.predecessors(client, selected, runs_all)
        wanted = pd.concat([selected, ancestors], ignore_index=True).drop_duplicates("run_id")
        known = pd.concat([runs_all, ancestors], ignore_index=True).drop_duplicates("run_id")
    logged_best = wanted["metrics"].map(lambda metrics: contract.BEST_VAL_ACCURACY in metrics)
    ranking = _read(client, cache, wanted[~logged_best], [contract.VAL_ACCURACY])

    def build(raw: pd.DataFrame) -> views.Views:
        history = frames.tidy_history(raw, wanted)
        return views.build(selected, history, options, all_runs=known, now_ms=now_ms, stale_after_s=stale_after_s, ui_base=ui_base)

    # Which runs the chart draws (the best `options.top`) is known from the run search and the ranking
    # histories alone; their continued-from runs are drawn too.
    drawn = set(build(ranking).drawn["run_id"]) | (set(wanted["run_id"]) - set(selected["run_id"]))
    raw = _read(client, cache, wanted[wanted["run_id"].isin(drawn)], needed_keys(options.metric))
    built = build(pd.concat([raw, ranking], ignore_index=True).drop_duplicates(["run_id", "key", "step"]))
    return built.page_spec("curves") if not built.curves.points.empty else None


def _read(client, cache, runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """From the cache when it holds them all, without waiting for a load in progress (the warm-up
    reads every key after the first chart's); else through it."""
    found = cache.peek(runs, keys)
    return found if found is not None else cache.load(client, runs, keys)
