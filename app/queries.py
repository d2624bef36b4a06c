"""Read runs and metric histories from MLflow into pandas DataFrames: the dashboard's data access.

The work is done in three modules, imported here under one name for the page, the report
command, the warm-up and the benchmark:
- `app.store`: the tracking URI, connecting, and every store failure told in one line;
- `app.search`: experiments and the run search, one row per run;
- `app.history`: metric histories in bulk, and the cache shared by every session.

Nothing here imports Streamlit.
"""

from __future__ import annotations

from app.history import (  # noqa: F401 - the data-access API, in one place for its callers
    CACHE_MAX_POINTS,
    LR_FIND_LOSS,
    LR_FIND_LR,
    SINGLE_VALUE_METRICS,
    SUGGESTED_LR,
    HistoryCache,
    LoadStats,
    fetch_history,
    history_keys,
    shared_history_cache,
)
from app.search import (  # noqa: F401
    ACTIVE_STATUSES,
    RUN_COLUMNS,
    _to_float,  # app/frames.py sorts param values with it
    default_experiments,
    fetch_runs,
    format_lr,
    list_experiments,
    predecessors,
    runs_frame,
    runs_version,
    search_runs,
)
from app.store import (  # noqa: F401
    StoreError,
    check_reachable,
    display_uri,
    explain,
    fail_fast,
    open_client,
    run_url,
    store_key,
    tracking_uri,
    ui_base_url,
)
from train import contract

PARAM_INIT_MODEL = contract.PARAM_INIT_MODEL
