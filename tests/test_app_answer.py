"""The answer first: the winner line, the forest plot of every stage's groups and the Groups
table, through the real page (`streamlit.testing.v1.AppTest`) on a store with a known answer."""

from __future__ import annotations

import json

import pandas as pd
from streamlit.testing.v1 import AppTest

from app.analysis import stats
from app.charts import colors as palette
from app.charts import forest
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import ANSWER_EXPERIMENT, ANSWER_WINNER, REPO, inline_values

PAGE = str(REPO / "app" / "dashboard.py")


def open_page(monkeypatch, uri: str, query: dict | None = None) -> AppTest:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    page = AppTest.from_file(PAGE, default_timeout=90)
    page.query_params.update({"exp": ANSWER_EXPERIMENT, **(query or {})})
    return page.run()


def forest_rows(page: AppTest) -> pd.DataFrame:
    """The group rows the forest plot draws (the first chart on the page)."""
    spec = json.loads(page.get("vega_lite_chart")[0].proto.spec)
    rows = [row for values in inline_values(spec) for row in values if "badge" in row]
    return pd.DataFrame(rows).drop_duplicates(["panel", "group"])


def test_the_winner_line_and_the_forest_plot_come_first(answer_store, monkeypatch):
    page = open_page(monkeypatch, answer_store["uri"])
    assert not page.exception and not page.error, [e.value for e in (*page.exception, *page.error)]
    stage, group = ANSWER_WINNER
    first = page.markdown[0].value
    assert first.startswith(f"**Best: {stage} · {group.replace('-', chr(92) + '-')}**"), first
    rows = forest_rows(page)
    assert list(dict.fromkeys(rows["panel"])) == ["scratch", "full", "head"]
    assert len(rows) == 9 and set(rows["n"]) == {3}
    best = rows[rows["verdict"] == stats.BEST]
    assert set(best["panel"]) == {"scratch", "full", "head"} and len(best) == 3
    assert best.set_index("panel").at[stage, "group"] == group
    assert all(badge.startswith("n=3") for badge in rows["badge"])
    charts = page.get("vega_lite_chart")
    assert len(charts) >= 2, "the forest plot, then the curves"
    assert not [e for e in page.expander if "In words" in e.label and e.proto.expanded], "the sentences are a click away, not open"


def test_the_margin_setting_changes_the_band_and_stays_in_the_url(answer_store, monkeypatch):
    page = open_page(monkeypatch, answer_store["uri"], {"margin": "0.2"})
    assert not page.exception and not page.error
    rows = forest_rows(page)
    # Within ±0.2 of full's best: everything in that stage short of it by less is "≈ best" or undecided, never "worse".
    assert not (rows["verdict"] == stats.WORSE).all()
    assert page.sidebar.number_input(key="margin").value == 0.2
    page.sidebar.number_input(key="margin").set_value(0.05).run()
    assert page.query_params["margin"] in ("0.05", ["0.05"])


def test_the_groups_view_answers_in_its_first_columns_with_blanks_not_none(answer_store, monkeypatch):
    page = open_page(monkeypatch, answer_store["uri"], {"view": "Groups"})
    assert not page.exception and not page.error
    table = page.dataframe[0]
    order = list(table.proto.column_order)
    assert order[:4] == ["stage", "group", "verdict", "n"], order
    widths = json.loads(table.proto.columns)
    assert sum(widths[name].get("width", 100) for name in order[: order.index("difference") + 1]) <= 1140
    assert "None" not in table.value.astype(str).to_numpy().ravel().tolist()


def test_the_forest_frame_keeps_each_stages_best_and_counts_what_it_leaves_out():
    rows = [{"stage": "full", "model": "m", "lr": 10.0**-k, "group": f"lr {k}", "n": 3, "mean": 0.9 - k / 100, "ci_low": 0.88 - k / 100,
             "ci_high": 0.92 - k / 100, "verdict": stats.BEST if k == 1 else stats.WORSE, "difference": (k - 1) / 100} for k in range(1, 13)]  # fmt: skip
    frame, left_out = forest.forest_frame(pd.DataFrame(rows))
    assert len(frame) == forest.ROWS_PER_PANEL and left_out == 12 - forest.ROWS_PER_PANEL
    assert frame.iloc[0]["verdict"] == stats.BEST
    low, high = forest.x_domain(frame, 0.01)
    assert low < frame["ci_low"].min() and high > frame["ci_high"].max()


def test_an_accuracys_forest_axis_stops_at_1_and_the_badges_sit_right_of_the_plot():
    rows = [{"stage": "full", "model": "m", "lr": 10.0**-k, "group": f"lr {k}", "n": 2, "mean": 0.99 - k / 100, "ci_low": 0.95 - k / 100,
             "ci_high": 1.03 - k / 100, "verdict": stats.BEST if k == 1 else stats.WORSE, "difference": (k - 1) / 100} for k in range(1, 4)]  # fmt: skip
    table = pd.DataFrame(rows)
    low, high = forest.x_domain(forest.forest_frame(table)[0], 0.01, bounds=(0.0, 1.0))
    assert high == 1.0 and low < 0.93
    colors = palette.ColorScale(["1e-1", "1e-2", "1e-3"], palette.ordered_colors(3), "learning rate")
    (panel,) = forest.forest_spec(table, colors=colors, margin=0.01, label="acc", bounds=(0.0, 1.0))["concat"]
    badges = [layer for layer in panel["layer"] if layer["mark"]["type"] == "text"]
    scale_end = panel["layer"][0]["encoding"]["x"]["scale"]["range"][1]  # where the x scale, and so every interval and the band, ends
    assert badges and all(layer["encoding"]["x"] == {"value": scale_end} for layer in badges) and scale_end < panel["width"]


def test_with_repeats_the_curves_are_groups_by_default_and_runs_a_click_away(answer_store, monkeypatch):
    from tests.app_fixtures import chart_data, curve_chart

    page = open_page(monkeypatch, answer_store["uri"])
    roles = set(chart_data(curve_chart(page))["role"].dropna()) - {"chance"}
    assert roles == {"mean"}, roles  # 27 runs drawn as their 9 configurations
    assert page.sidebar.checkbox(key="group").value is True
    page.sidebar.checkbox(key="group").uncheck().run()
    assert set(chart_data(curve_chart(page))["role"].dropna()) - {"chance"} == {"run"}
