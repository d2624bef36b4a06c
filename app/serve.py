"""`streamlit run app/serve.py` (`make dashboard`): the dashboard, with the tracking store read as the server starts.

The same as `streamlit run app/dashboard.py`, which is itself an st.App now: the page served
through Streamlit's ASGI entry point, whose start-up hook runs `app.page.warmup`, so the first visitor
finds the page's modules imported and the first chart and the default experiment's histories
read. Kept as the Makefile's entry. Every `streamlit run` option (--server.port, ...) applies.

The page's modules (pandas, MLflow, Altair and the page's own) are imported here, as Streamlit
imports this file before its server answers, like `app/dashboard.py`'s own imports: left to the
warm-up, they were imported after the server answered, on the first visitor's clock (2-4 s). The
`app = st.App(...)` line stays written out: `streamlit run` finds the app by reading this file.
"""

import streamlit as st

from app import dashboard  # noqa: F401 - the page's modules, imported before the server answers
from app.page.warmup import lifespan

app = st.App("dashboard.py", lifespan=lifespan)
