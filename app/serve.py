"""`streamlit run app/serve.py`: the dashboard, with the tracking store read as the server starts.

The same page as `streamlit run app/dashboard.py` (which still works), served through st.App,
Streamlit's ASGI entry point, whose start-up hook runs `app.warmup`: the first visitor finds
the page's modules imported and the default experiment's histories cached, instead of waiting
for both. Every `streamlit run` option (--server.port, ...) applies as usual.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # the repo root, for `from app import ...` (as app/dashboard.py does)
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app.warmup import lifespan  # noqa: E402

app = st.App("dashboard.py", lifespan=lifespan)
