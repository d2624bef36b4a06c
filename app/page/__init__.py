"""The Streamlit page: its views, loaders, URL state, first chart, warm-up and export."""
