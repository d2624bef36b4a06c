"""Read the tracking store before the first visitor: what `app/serve.py` starts with the server.

Streamlit runs a page's script only when a session opens, so the first visitor of a fresh
`streamlit run app/dashboard.py` waits for the page's imports (pandas, MLflow, Altair) and for
the histories its curve chart draws. The warm-up does both as the server starts, in a thread so
the server answers at once: it imports the page's modules and builds the default page's views
(`first_chart.cached_views`: the answer from the run search, the curve chart from the histories
it draws, read into the history cache every session shares) of the experiment a page opens on
without `?exp=` (`run_search.default_experiments`), or of `LRLAB_WARM_EXPERIMENTS` (comma-separated
names). A session that arrives while it searches or builds waits for it and then takes what it
found and built, rather than asking the server the same at the same time. A store
that is down is left for the page to report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from train import messages

ENV_EXPERIMENTS = "LRLAB_WARM_EXPERIMENTS"
log = logging.getLogger("lrlab.warmup")


# The warm-up's run search, by (store and reader, experiment ids), for the first page to reuse.
_SEARCHED: dict[tuple, tuple[float, object]] = {}
_LOCK = threading.Lock()
SEARCH_REUSE_SECONDS = 30  # the page's own run search is cached for a minute: as fresh as that


# Set once the warm-up of a store (by `store_key`) is past its run search, done or failed.
_SEARCHING: dict[str, threading.Event] = {}
SEARCH_WAIT_SECONDS = 60  # beyond it a visitor searches on its own (MLflow's request timeout is 30 s)


def searched(key: str, experiment_ids: tuple[str, ...]):
    """The runs the warm-up found for these experiments (once, and only if recent), else None.
    While the warm-up of this store is still searching, wait for it: the first visitor of a fresh
    server would otherwise ask the server for the same 1,000 runs at the same time."""
    with _LOCK:
        searching = _SEARCHING.get(key)
    if searching is not None:
        searching.wait(timeout=SEARCH_WAIT_SECONDS)
    with _LOCK:
        found = _SEARCHED.pop((key, tuple(experiment_ids)), None)
    return found[1] if found and time.monotonic() - found[0] < SEARCH_REUSE_SECONDS else None


def warm_up(uri: str | None = None) -> dict:
    """Load what a page will ask for first; a summary of what was read (also logged)."""
    started = time.perf_counter()
    from app import report  # noqa: F401 - imported now, not by the first visitor
    from app.data import history_cache, run_search, store
    from app.page import first_chart, url_state

    store.fail_fast()
    uri = uri or store.tracking_uri()
    key = store.store_key(uri)
    searching = threading.Event()
    with _LOCK:
        _SEARCHING[key] = searching
    try:
        client = store.open_client(uri)
        experiments = run_search.list_experiments(client)
        wanted = [n.strip() for n in os.environ.get(ENV_EXPERIMENTS, "").split(",") if n.strip()] or run_search.default_experiments(experiments["name"].tolist())
        ids = list(experiments.loc[experiments["name"].isin(wanted), "experiment_id"])
        runs = run_search.search_runs(client, ids)
        searched_at = time.perf_counter() - started
        with _LOCK:  # the first visitor's page asks the same a moment later: it takes this answer
            _SEARCHED[(key, tuple(ids))] = (time.monotonic(), runs)
        searching.set()
        cache = history_cache.shared_history_cache(key)
        # The default page's views, curve chart included, as the page asks for them (`loaders.views_of`):
        # a visitor who arrives meanwhile waits for them. Only the histories they draw are read.
        active = bool(runs["status"].isin(run_search.ACTIVE_STATUSES).any())
        answered = []  # when the answer is shared: a visitor draws it then
        built = first_chart.cached_views(
            key, client, cache, runs, runs, first_chart.default_options(runs), clock=int(time.time() // 30) if active else 0,
            curves=True, on_answer=lambda: answered.append(time.perf_counter() - started),
            uri=uri, now_ms=time.time() * 1000, stale_after_s=float(url_state.SPEC["stale"][1] * 60), ui_base=store.ui_base_url(uri),
        )  # fmt: skip
        answered_at = answered[0] if answered else time.perf_counter() - started
        built.build_seconds, built.built_at = time.perf_counter() - started, f"warm-up {time.strftime('%H:%M:%S')}"
    except Exception as error:  # noqa: BLE001 - the page says what is wrong with the store
        log.warning("warm-up of %s skipped: %s", store.display_uri(uri), messages.first_line(error))
        return {"experiments": [], "runs": 0, "seconds": time.perf_counter() - started}
    finally:
        searching.set()  # a visitor waiting for the search goes on, with the runs or without
        with _LOCK:
            if _SEARCHING.get(key) is searching:
                del _SEARCHING[key]
    summary = {"experiments": wanted, "runs": len(runs), "seconds": time.perf_counter() - started, "searched_s": searched_at, "answer_s": answered_at}
    log.warning(
        "warm-up: %d run(s) of %s read in %.1f s (runs searched at %.1f s, the answer at %.1f s)",
        summary["runs"], ", ".join(wanted) or "no experiment", summary["seconds"], searched_at, answered_at,
    )  # fmt: skip
    return summary


@contextlib.asynccontextmanager
async def lifespan(app):
    """st.App's lifespan hook: start the warm-up and let the server answer meanwhile."""
    threading.Thread(target=warm_up, name="lrlab-warm-up", daemon=True).start()
    yield None
