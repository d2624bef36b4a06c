"""`streamlit run app/serve.py` (`make dashboard`) imports the page's modules before its server
answers, as `streamlit run app/dashboard.py` does: Streamlit imports the entry file (to find its
st.App) before it starts the server, so whatever that import loads is off the first visitor's clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from streamlit.web.server.app_discovery import discover_asgi_app

REPO = Path(__file__).resolve().parents[1]


def modules_after_import(entry: str) -> set[str]:
    """The modules loaded by importing the entry file as `streamlit run` does (its folder on sys.path,
    the file by its stem), in a fresh interpreter."""
    code = f"import importlib, json, sys; importlib.import_module({entry!r}); print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "app")}  # the entry's folder first on the path, as streamlit puts it
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_serve_imports_what_the_page_imports_before_the_server_answers():
    page = modules_after_import("dashboard")
    serve = modules_after_import("serve")
    heavy = {"pandas", "altair", "mlflow", "app.page.views", "app.page.comparison_view", "app.charts.forest", "app.report"}
    assert heavy <= page, heavy - page  # what the page's script needs at its first run
    missing = {name for name in page - serve if name.split(".")[0] in {"app", "pandas", "altair", "mlflow", "numpy", "scipy", "pyarrow"}}
    assert not missing, sorted(missing)[:20]


def test_streamlit_still_finds_the_app_in_serve():
    found = discover_asgi_app(REPO / "app" / "serve.py")
    assert found.is_asgi_app and found.import_string == "serve:app", found
