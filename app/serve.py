"""`streamlit run app/serve.py` (`make dashboard`): the dashboard, with the tracking store read as the server starts.

The same as `streamlit run app/dashboard.py`, which is itself an st.App now: the page served
through Streamlit's ASGI entry point, whose start-up hook runs `app.page.warmup`, so the first visitor
finds the page's modules imported and the first chart and the default experiment's histories
read. Kept as the Makefile's entry. Every `streamlit run` option (--server.port, ...) applies.
"""

import streamlit as st

from app.page.warmup import lifespan

app = st.App("dashboard.py", lifespan=lifespan)
