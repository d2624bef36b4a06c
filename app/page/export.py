"""The dashboard's Export view: figures rendered on the server, CSVs and reports to download."""

from __future__ import annotations

import streamlit as st

from app import report
from app.analysis import frames
from app.page import comparison_view, views


def show(built: views.Views, uri: str, experiments: list[str]) -> None:
    """SVG and PNG of every chart rendered on the server, the plotted points as CSV, a report."""
    state = st.session_state
    filters = {key: state[key] for key in (*frames.FILTER_COLUMNS, "q") if state.get(key)}
    context = report.context_lines(uri, experiments, {**filters, "metric": state["metric"], "smoothing": state["smooth"]})
    title = f"Learning-rate study: {', '.join(experiments)}"
    figures = built.figures()
    comparison = comparison_view.comparison_of(built)  # the verdicts above the chart, in the reports too
    st.caption("Figures are rendered on the server (vl-convert); CSVs hold the exact plotted points, raw and smoothed.")
    for figure in figures:
        columns = st.columns([3, 1, 1, 1])
        columns[0].text(figure.title)
        columns[1].download_button("SVG", data=lambda f=figure: report.to_svg(f.chart), file_name=f"{figure.name}.svg", mime="image/svg+xml", key=f"svg-{figure.name}", on_click="ignore")
        columns[2].download_button("PNG", data=lambda f=figure: report.to_png(f.chart), file_name=f"{figure.name}.png", mime="image/png", key=f"png-{figure.name}", on_click="ignore")
        columns[3].download_button("CSV", data=lambda f=figure: report.to_csv(f.data), file_name=f"{figure.name}.csv", mime="text/csv", key=f"csv-{figure.name}", on_click="ignore")
    st.download_button("Summary table (CSV)", data=report.to_csv(built.summary), file_name="summary.csv", mime="text/csv", on_click="ignore")
    st.download_button("Comparison: groups and verdicts (CSV)", data=report.to_csv(comparison.table), file_name="comparison.csv", mime="text/csv", on_click="ignore")
    left, right = st.columns(2)
    left.download_button(
        "Report (HTML, figures inline)", data=lambda: report.report_html(title, figures, built.summary, context, comparison),
        file_name="report.html", mime="text/html", type="primary", on_click="ignore",
    )  # fmt: skip
    right.download_button(
        "Report (Markdown + figures, zip)", data=lambda: report.report_zip(title, figures, built.summary, context, comparison),
        file_name="report.zip", mime="application/zip", on_click="ignore",
    )  # fmt: skip
