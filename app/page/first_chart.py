"""The page's views as the page builds them: from the run search, and the few histories they draw.

`build_views` makes a `views.Views` that reads histories on demand through the history cache
every session shares (`CacheReader`): the answer (winner line, forest plot, runs table, verdicts)
comes from the run search alone for finished runs of this version; the curve chart reads the
chart's keys of the runs it draws (a bounded sample with repeats, `views.Views.drawn`); the other
views read theirs when chosen. `cached_views` keeps the last few built, so the server's warm-up
(app/page/warmup.py) builds the default page, curve chart included, before the first visitor.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

import pandas as pd

from app.analysis import curve_data, frames
from app.data import history_cache, run_search, store
from app.page import url_state, views

needed_keys = views.needed_keys  # the history keys the curve chart of a metric reads


class CacheReader:
    """`views.Reader` through the shared history cache, counting what it read (`stats`); a store
    failure comes out as a `store.StoreError` (one line for the page)."""

    def __init__(self, client, cache: history_cache.HistoryCache, uri: str = ""):
        self.client, self.cache, self.uri = client, cache, uri
        self.stats = history_cache.LoadStats()

    def __call__(self, runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        found = self.cache.peek(runs, keys)  # cached whole: no wait for a load in progress
        if found is not None:
            self.stats.cached += len(runs)
            return found
        try:
            raw, read = self.cache.read(self.client, runs, keys)
        except Exception as error:  # noqa: BLE001 - a store failure is a message, never a traceback
            raise store.explain(error, self.uri) from None
        self.stats.add(read)
        return raw


def build_views(client, cache, selected: pd.DataFrame, runs_all: pd.DataFrame, options: curve_data.CurveOptions, *, uri: str = "", **kwargs) -> views.Views:
    """The views of `selected` reading histories through `cache` (see the module); `kwargs`: now_ms,
    stale_after_s, ui_base. With `options.join`, the runs they continue from are looked up first."""
    known = run_search.with_predecessors(client, selected, runs_all)[1] if options.join else runs_all
    reader = CacheReader(client, cache, uri)
    built = views.build(selected, None, options, all_runs=known, reader=reader, **kwargs)
    built.load_stats = reader.stats
    return built


def read_curves_meanwhile(built: views.Views) -> threading.Thread | None:
    """Start reading the histories the curve chart draws (its bounded sample, `views.Views.drawn`),
    into the shared cache, in a thread: the read mostly waits for the server, which meanwhile has a
    core of its own, while this process computes the answer. The curve chart then finds them
    cached. None when there is nothing to start: no reader, or a joined view (it follows the
    runs' predecessors first). A failure is left for the curve chart's own read to report."""
    reader = getattr(built, "_reader", None)
    if not isinstance(reader, CacheReader) or built.options.join:
        return None
    drawn = built.drawn  # computed here, before the thread: cached properties are not built twice

    def read() -> None:
        try:
            if not drawn.empty:
                reader(drawn, needed_keys(built.metric))
        except Exception:  # noqa: BLE001 - the curve chart reads again and says what is wrong
            pass

    thread = threading.Thread(target=read, name="lrlab-curves-read", daemon=True)
    thread.start()
    return thread


def chart_spec(client, cache, selected: pd.DataFrame, runs_all: pd.DataFrame, options: curve_data.CurveOptions, **kwargs) -> dict | None:
    """The curve chart of `selected` in its page form, from the histories it draws only; None when no
    run has logged the metric yet."""
    built = build_views(client, cache, selected, runs_all, options, **kwargs)
    return built.page_spec("curves") if not built.curves.points.empty else None


# The views built last, by (store and reader, the runs, the options, the settings of the time): the
# warm-up builds the default page's so that the first visitor finds it ready. A few only: the page's
# own cache (`loaders.views_of`) keeps them for every later session.
_BUILT: OrderedDict[tuple, views.Views] = OrderedDict()
_BUILT_MAX = 4
_BUILT_LOCK = threading.Lock()
_BUILDING: dict[tuple, threading.Event] = {}  # memo keys being built, set when done


def cached_views(key: str, client, cache, selected: pd.DataFrame, runs_all: pd.DataFrame, options: curve_data.CurveOptions, *, clock: int = 0, curves: bool = False, on_answer=None, **kwargs) -> views.Views:
    """`build_views`, prepared (the answer computed; with `curves` the curve chart too, after it is
    shared, its histories read while the answer is computed), or the very one built before for the
    same store, runs, options and `clock`; while another thread prepares that one (the warm-up, as
    the first visitor arrives), wait for it instead. `on_answer()` is called once the answer is shared."""
    memo = (key, run_search.runs_version(selected), run_search.runs_version(runs_all), dataclasses.astuple(options), kwargs.get("ui_base"), kwargs.get("stale_after_s"), clock)
    with _BUILT_LOCK:
        building = _BUILDING.get(memo)
        if building is None and memo not in _BUILT:
            _BUILDING[memo] = threading.Event()
    if building is not None:
        building.wait(timeout=60)
    with _BUILT_LOCK:
        if memo in _BUILT:
            return _BUILT[memo]
    reading = None
    try:
        built = build_views(client, cache, selected, runs_all, options, **kwargs)
        if curves:  # the curve chart follows at once: its histories are read while the answer is computed
            reading = read_curves_meanwhile(built)
        built.prepare()
        with _BUILT_LOCK:
            _BUILT[memo] = built
            while len(_BUILT) > _BUILT_MAX:
                _BUILT.popitem(last=False)
    finally:
        with _BUILT_LOCK:
            done = _BUILDING.pop(memo, None)
        if done is not None:
            done.set()  # a visitor waiting draws the answer now; the curve chart it asks for next waits on `built`
    if on_answer is not None:
        on_answer()
    if curves:
        if reading is not None:
            reading.join()
        built.page_spec("curves")
    return built


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
