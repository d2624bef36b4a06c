"""The README's screenshot: the dashboard on a tracking store, drawn by headless Chromium.

    # the demo experiment it shows: plans/demo.yaml, 8 small runs on the built-in demo data
    MLFLOW_TRACKING_URI=sqlite:////tmp/demo/mlflow.db python -m sweep --plan demo --experiment demo
    python -m docs.screenshot sqlite:////tmp/demo/mlflow.db --query "exp=demo&join=true&margin=0.05" --out docs/dashboard.png

The page is served by `streamlit run` on a free port, opened at 1600 x 1000 (the first screen
the answer must fit in), and captured once the curve chart and the runs table have drawn. Needs Debian's chromium (.ci/system-deps.sh).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.app_fixtures import chromium_page, dashboard_server, wait_for_full_page

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tracking_uri", help="the store to show (sqlite:///... or http://...)")
    parser.add_argument("--query", default="", help="the page's settings as in its URL, e.g. 'exp=demo&metric=loss&logy=true'")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--full-page", action="store_true", help="the whole scrolled page, not only the first screen")
    parser.add_argument("--size", default="1600x1000", help="the browser window, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as logs, dashboard_server(args.tracking_uri, log_dir=Path(logs)) as url, chromium_page(*(int(n) for n in args.size.split("x"))) as page:
        page.goto(f"{url}/?{args.query}")
        wait_for_full_page(page, timeout_ms=120_000)
        page.wait_for_timeout(1500)  # Vega's and the grid's last paints
        page.screenshot(path=str(args.out), full_page=args.full_page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
