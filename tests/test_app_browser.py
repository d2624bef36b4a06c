"""The page served by `streamlit run` and opened in headless Chromium: a chart is drawn, nothing fails."""

from __future__ import annotations

import time

import pytest

from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import (
    ARTIFACTS,
    chromium_page,
    dashboard_server,
    mlflow_server,
    server_requests,
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
def test_the_dashboard_reads_the_store_as_it_starts_so_the_first_visitor_waits_for_nothing(lab_store, tmp_path):
    """`streamlit run app/dashboard.py` (the contract's entry point, an st.App whose start-up hook is
    the warm-up; `app/serve.py` is the same), against a real `mlflow server`: the first session of
    the fresh process reads no history. Its text reads as typed (no Markdown escapes showing)."""
    with mlflow_server(lab_store["uri"], workdir=tmp_path) as served, dashboard_server(served, log_dir=tmp_path) as url:
        log = next(tmp_path.glob(f"streamlit-{url.rsplit(':', 1)[1]}.log"))
        deadline = time.monotonic() + 60
        while "warm-up:" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "warm-up: 26 run(s) of lr-study" in log.read_text(), log.read_text()[-2000:]
        before = server_requests(served, tmp_path)
        with chromium_page() as page:
            page.goto(f"{url}/?exp={contract.DEFAULT_EXPERIMENT}")
            wait_for_full_page(page)
            body = page.inner_text("body")
            assert "Traceback" not in body
            assert f"Tracking store: {served}" in body, body[:500]  # http://127.0.0.1:PORT, not http://127\.0\.0\.1
            assert "\\" not in page.inner_text("[data-testid='stSidebar']")
        read = [r for r in server_requests(served, tmp_path)[len(before) :] if "/metrics/get-history" in r]
        assert not read, read


@pytest.mark.browser
def test_the_page_uses_its_width_and_the_table_needs_no_sideways_scroll_at_1600_px(lab_store, tmp_path):
    with dashboard_server(lab_store["uri"], log_dir=tmp_path) as url, chromium_page(width=1600) as page:
        page.goto(f"{url}/?exp={contract.DEFAULT_EXPERIMENT}")
        wait_for_full_page(page)
        block = page.locator("[data-testid='stMainBlockContainer']")
        padding = block.evaluate("b => parseFloat(getComputedStyle(b).paddingLeft) + parseFloat(getComputedStyle(b).paddingRight)")
        width = block.bounding_box()["width"] - padding
        chart = page.locator("[data-testid='stVegaLiteChart']").last.bounding_box()  # the curves (the verdicts' forest plot is first)
        assert 0.9 * width <= chart["width"] <= width + 1, (chart, width)
        scroller = page.locator("[data-testid='stDataFrame'] .dvn-scroller").first
        sizes = scroller.evaluate("s => [s.scrollWidth, s.clientWidth]")
        assert sizes[0] <= sizes[1] + 2, sizes
