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


FOLD = (1600, 1000)  # the first screen the answer must fit in


def label_and_mark_boxes(page, chart_index: int = -1) -> tuple[list[dict], list[dict]]:
    """The drawn best-point labels' and diamonds' boxes in a chart (Vega's SVG, as the browser lays it out)."""
    chart = page.locator("[data-testid='stVegaLiteChart']").nth(chart_index)
    texts = chart.evaluate(
        "c => [...c.querySelectorAll('g.mark-text text')].filter(t => t.textContent.trim() && /\\d\\.\\d/.test(t.textContent))"
        ".map(t => { const r = t.getBoundingClientRect(); return {text: t.textContent, x: r.x, y: r.y, w: r.width, h: r.height}; })"
    )
    marks = chart.evaluate(
        "c => [...c.querySelectorAll('g.mark-symbol path')].filter(p => getComputedStyle(p).opacity !== '0')"
        ".map(p => { const r = p.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; })"
    )
    return texts, marks


def forest_badge_and_line_boxes(page) -> tuple[list[dict], list[dict]]:
    """In the forest plot (the page's first chart): the "n=3 worse" badges' boxes, and those of the
    intervals, the best's dashed line and the margin band."""
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    box = "e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; }"
    badges = chart.evaluate(f"c => [...c.querySelectorAll('g.mark-text text')].filter(t => t.textContent.startsWith('n=')).map({box})")
    lines = chart.evaluate(f"c => [...c.querySelectorAll('g.mark-rule line, g.mark-rule path, g.mark-rect path')].map({box})")
    return badges, lines


def overlap(a: dict, b: dict, slack: float = 0.5) -> bool:
    return a["x"] + slack < b["x"] + b["w"] and b["x"] + slack < a["x"] + a["w"] and a["y"] + slack < b["y"] + b["h"] and b["y"] + slack < a["y"] + a["h"]


@pytest.mark.browser
def test_the_answer_is_above_the_fold_and_the_curves_read(answer_store, tmp_path):
    """Real Chromium at 1600x1000, the page behind a real `mlflow server` on a store with a known
    answer: the winner line and the forest plot on the first screen; no two best-point labels
    overlap and none covers a diamond; the chance line is drawn; the Groups verdict column is on screen."""
    from tests.app_fixtures import ANSWER_EXPERIMENT, ANSWER_WINNER

    ARTIFACTS.mkdir(exist_ok=True)
    with mlflow_server(answer_store["uri"], workdir=tmp_path) as served, dashboard_server(served, log_dir=tmp_path) as url, chromium_page(*FOLD) as page:
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(f"{url}/?exp={ANSWER_EXPERIMENT}")
        wait_for_full_page(page)
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "dashboard-answer-1600x1000.png"))
        stage, group = ANSWER_WINNER
        winner = page.get_by_text(f"Best: {stage} · {group}")
        assert winner.count() == 1
        assert winner.bounding_box()["y"] + winner.bounding_box()["height"] <= FOLD[1]
        forest = page.locator("[data-testid='stVegaLiteChart']").first.bounding_box()
        assert forest["y"] + forest["height"] <= FOLD[1], forest
        assert forest["height"] < 300, "compact: a row per group"
        badges, lines = forest_badge_and_line_boxes(page)
        assert len(badges) >= 6 and lines
        assert not [(b, line) for b in badges for line in lines if overlap(b, line)], "a badge over an interval, the best line or the band"
        ticks = page.locator("[data-testid='stVegaLiteChart']").first.evaluate("c => [...c.querySelectorAll('g.role-axis-label text')].map(t => t.textContent)")
        assert ticks and max(float(t) for t in ticks if t.replace(".", "").isdigit()) <= 1, ticks  # an accuracy's axis stops at 1
        texts, marks = label_and_mark_boxes(page)
        assert len(texts) >= 6 and marks
        for i, a in enumerate(texts):
            for b in texts[i + 1 :]:
                assert not overlap(a, b), (a, b)
            for mark in marks:
                assert not overlap(a, mark, slack=1.5), (a, mark)
        curves = page.locator("[data-testid='stVegaLiteChart']").last
        dashed = curves.evaluate("c => [...c.querySelectorAll('g.mark-rule line, g.mark-rule path')].filter(l => (l.getAttribute('stroke-dasharray') || '').startsWith('6')).length")
        assert dashed >= 3, "a dashed chance line in each stage's column"
        page.goto(f"{url}/?exp={ANSWER_EXPERIMENT}&view=Groups")
        wait_for_chart(page)
        grid = page.locator("[data-testid='stDataFrame']").last
        grid.wait_for(timeout=60_000)
        grid.scroll_into_view_if_needed()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "dashboard-groups-1600x1000.png"))
        box = grid.bounding_box()
        assert box["x"] + 70 + 190 + 95 <= min(box["x"] + box["width"], FOLD[0]), box  # stage, group, verdict: on screen
        assert not [e for e in errors if "vega" in e.lower() or "Error" in e], errors


@pytest.mark.browser
def test_hostile_url_values_and_infinite_metrics_are_a_note_in_a_browser(make_store, tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from app.data import synthetic

    uri = make_store()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(contract.DEFAULT_EXPERIMENT)
    for lr in (1e-3, 1e-4):
        synthetic.log_run(client, experiment_id, name=f"full lr={lr:g}", params=synthetic.params_for(lr, "full", epochs=5), values=synthetic.history(lr, "full", 5))
    values = {key: [float("-inf")] * 5 for key in synthetic.history(1e-2, "full", 5)}
    broken = synthetic.log_run(client, experiment_id, name="full lr=0.01 all -inf", params=synthetic.params_for(1e-2, "full", epochs=5), values=values, summary=False)
    client.log_batch(broken, metrics=[Metric(contract.BEST_VAL_ACCURACY, float("-inf"), 0, 0)])
    with dashboard_server(uri, log_dir=tmp_path) as url, chromium_page(*FOLD) as page:
        page.goto(f"{url}/?every=0&live=1&smooth=nan&top=-3&stale=-5")
        wait_for_full_page(page)
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "dashboard-hostile-url.png"))
        body = page.inner_text("body")
        assert "Traceback" not in body and "unexpected error" not in body
        assert "URL holds a value it cannot use" in body and "every=0" in body and "smooth=nan" in body
        charts = page.locator("[data-testid='stVegaLiteChart']")
        assert charts.count() >= 1
        assert not [t for t in charts.all_inner_texts() if "Error" in t], "Vega drew an error instead of a chart"
