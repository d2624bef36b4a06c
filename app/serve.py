"""`streamlit run app/serve.py` (`make dashboard`): the dashboard, with the tracking store read as the server starts.

The same as `streamlit run app/dashboard.py`, which is itself an st.App now: the page served
through Streamlit's ASGI entry point, whose start-up hook runs `app.warmup`, so the first visitor
finds the page's modules imported and the first chart and the default experiment's histories
read. Kept as the Makefile's entry. Every `streamlit run` option (--server.port, ...) applies.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # the repo root, for `from app import ...` (as app/dashboard.py does)
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app.warmup import lifespan  # noqa: E402

app = st.App("dashboard.py", lifespan=lifespan)
