"""The page served by `streamlit run` and opened in headless Chromium: a chart is drawn, nothing fails."""

from __future__ import annotations

import pytest

from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import ARTIFACTS, chromium_page, dashboard_server, wait_for_chart
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
