"""The comparison dashboard: data access (`app.data`), analysis (`app.analysis`), charts
(`app.charts`), the Streamlit page (`app.page`), and its entry points (`dashboard.py`,
`serve.py`, `report.py`).

Everything outside `app.page` and the entry points works without Streamlit, so the loaders,
statistics and chart builders are tested, benchmarked and used by the report command on their own.
"""
