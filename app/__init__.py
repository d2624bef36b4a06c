"""The comparison dashboard: data access (`queries`), reshaping (`frames`), charts, export, the page.

Everything but `dashboard.py` works without Streamlit, so the loaders and chart builders are
tested, benchmarked and used by the report command on their own.
"""
