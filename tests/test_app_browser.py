"""The page served by `streamlit run` and opened in headless Chromium: a chart is drawn, nothing fails."""

from __future__ import annotations

import time

import pytest

from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import (
    ARTIFACTS,
    REPO,
    chromium_page,
    dashboard_server,
    mlflow_server,
    wait_for_chart,
    wait_for_full_page,
)
from train import contract


@pytest.mark.browser
def test_dashboard_draws_its_charts_in_a_browser(lab_store, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with dashboard_server(lab_store["uri"], log_dir=tmp_path) as url, chromium_page() as page:
        page.goto(f"{url}/?exp={contract.DEFAULT_EXPERIMENT}&smooth=0.4")
        wait_for_chart(page)
        page.wait_for_selector("[data-testid='stDataFrame']", timeout=30_000)
        page.wait_for_timeout(500)  # let Vega finish its last paint before the picture
        page.screenshot(path=str(ARTIFACTS / "dashboard-browser.png"), full_page=True)
        text = page.inner_text("body")
        assert "Traceback" not in text and "unexpected error" not in text
        assert "Learning rates, stages and schedules" in text
        assert page.locator("[data-testid='stVegaLiteChart']").count() >= 1
        assert "smooth=0.4" in page.url
    assert (ARTIFACTS / "dashboard-browser.png").stat().st_size > 20_000


@pytest.mark.browser
def test_serve_reads_the_store_as_it_starts_so_the_first_visitor_waits_for_nothing(lab_store, tmp_path):
    """`streamlit run app/serve.py` (st.App with the warm-up as its start-up hook), against a real
    `mlflow server`: the first session of the fresh process finds every history cached."""
    with mlflow_server(lab_store["uri"], workdir=tmp_path) as served, dashboard_server(served, log_dir=tmp_path, script=REPO / "app" / "serve.py") as url:
        log = next(tmp_path.glob(f"streamlit-{url.rsplit(':', 1)[1]}.log"))
        deadline = time.monotonic() + 60
        while "warm-up:" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "warm-up: 26 run(s) of lr-study" in log.read_text(), log.read_text()[-2000:]
        with chromium_page() as page:
            page.goto(f"{url}/?exp={contract.DEFAULT_EXPERIMENT}")
            wait_for_full_page(page)
            try:  # the sidebar's last caption can paint a moment after the script is done
                page.wait_for_function("() => document.querySelector(\"[data-testid='stSidebar']\").innerText.includes('built at')", timeout=30_000)
            except Exception:  # noqa: BLE001 - say what the page shows instead
                pytest.fail(f"no build note on the page: {page.inner_text('body')[-3000:]}")
            note = page.locator("[data-testid='stSidebar']").inner_text()
            assert "0 run(s) read whole" in note and "26 from cache" in note, note
            assert "Traceback" not in page.inner_text("body")
