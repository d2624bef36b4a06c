"""Export: charts as SVG and PNG rendered on the server, plotted points as CSV, and a report.

Figures are rendered by vl-convert (no browser), so a report can be built on a machine
with nothing but Python: `python -m app.report --experiment lr-study --out report/`
writes report.html (figures inline) and report.md with figures/ and data/ beside it; the
page offers the same as one HTML file or a zip.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import io
import os
import re
import sys
import time
import zipfile
from pathlib import Path

import altair as alt
import pandas as pd

from app.analysis import curve_data, frames, stats
from app.data import histories, run_search, store
from app.page import views
from train import contract, csv_safe

VL_VERSION = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])  # "6.4"
TABLE_COLUMNS = [
    "run", "lr", "stage", "model", "schedule", "seed", "state", "best_val_accuracy", "best_epoch",
    "final_accuracy", "final_val_accuracy", "final_loss", "final_val_loss", "gap", "duration_s", "images_per_second",
]  # fmt: skip
# ":" and "@" too: "http://", "www." and "a@b.c" would start GFM autolinks, inside which a backslash
# is no escape but shows (`http://127\.0\.0\.1`); escaped, they stay text and read as typed.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:@])")


def to_svg(chart) -> str:
    import vl_convert as vlc  # only when a figure is exported: the page itself never needs it

    return vlc.vegalite_to_svg(chart.to_json(), vl_version=VL_VERSION)


def to_png(chart, scale: float = 2.0) -> bytes:
    import vl_convert as vlc

    return vlc.vegalite_to_png(chart.to_json(), vl_version=VL_VERSION, scale=scale)


def to_csv(frame: pd.DataFrame) -> bytes:
    """Every CSV the dashboard and the report write: text that would start a formula is neutralised."""
    return csv_safe.to_csv(frame).encode()


def markdown_text(text) -> str:
    """`text` as literal Markdown: special characters escaped, no HTML, one line."""
    flat = " ".join(str(text).split())
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", flat)
    return escaped.replace("<", "&lt;").replace(">", "&gt;")


def table_for_report(summary: pd.DataFrame) -> pd.DataFrame:
    table = summary[TABLE_COLUMNS].copy()
    for column in table.columns:
        if pd.api.types.is_float_dtype(table[column]):
            digits = 0 if column in ("best_epoch", "duration_s", "images_per_second") else 4
            table[column] = table[column].map(lambda v, d=digits: "" if pd.isna(v) else f"{v:.{d}f}")
    table["lr"] = summary["lr"].map(run_search.format_lr)
    return table.fillna("").astype(str)


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(markdown_text(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(markdown_text(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


COMPARISON_TITLE = "Is the difference real?"


def comparison_for_report(comparison: stats.Comparison) -> pd.DataFrame:
    """The comparison table as the report prints it: numbers to 4 digits, lr as 1e-3, blanks for NaN."""
    columns = [c for c in comparison.table.columns if c not in ("seeds_needed", "group", "runs")]
    table = comparison.table[columns].copy()
    for column in ("mean", "std", "ci_low", "ci_high", "difference", "difference_low", "difference_high"):
        table[column] = table[column].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    table["lr"] = table["lr"].map(lambda v: "" if pd.isna(v) else stats.lr_text(v))
    return table.fillna("").astype(str)


def comparison_html(comparison: stats.Comparison | None) -> list[str]:
    if comparison is None:
        return []
    said = [f"<li>{html.escape(s)}</li>" for s in stats.sentences(comparison)] or ["<li>No finished run to compare.</li>"]
    notes = [f"<p><i>{html.escape(note)}</i></p>" for note in comparison.notes]
    table = comparison_for_report(comparison).to_html(index=False, escape=True, border=0) if not comparison.table.empty else ""
    return [f"<h2>{COMPARISON_TITLE}</h2>", f"<p>{html.escape(stats.explanation(comparison))}</p><ul>", *said, "</ul>", *notes, table]


def comparison_markdown(comparison: stats.Comparison | None) -> list[str]:
    if comparison is None:
        return []
    lines = ["", f"## {COMPARISON_TITLE}", "", markdown_text(stats.explanation(comparison)), ""]
    lines += [f"- {markdown_text(s)}" for s in stats.sentences(comparison)] or ["- No finished run to compare."]
    lines += ["", *[f"*{markdown_text(note)}*" for note in comparison.notes]]
    if not comparison.table.empty:
        lines += ["", markdown_table(comparison_for_report(comparison)), "", "The whole table, with seeds needed and member runs: [CSV](data/comparison.csv)."]
    return lines


def report_html(title: str, figures: list[views.Figure], summary: pd.DataFrame, context: dict[str, str], comparison: stats.Comparison | None = None) -> str:
    """One self-contained HTML page: context, the verdicts per stage, every figure as inline SVG, the summary table."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><ul>",
        *[f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in context.items()],
        "</ul>",
        *comparison_html(comparison),
    ]
    for figure in figures:
        parts += [f"<h2>{html.escape(figure.title)}</h2><figure>", to_svg(figure.chart), "</figure>"]
    parts += ["<h2>Runs</h2>", table_for_report(summary).to_html(index=False, escape=True, border=0), "</body></html>"]
    return "\n".join(parts)


def report_markdown(title: str, figures: list[views.Figure], summary: pd.DataFrame, context: dict[str, str], comparison: stats.Comparison | None = None) -> str:
    lines = [f"# {markdown_text(title)}", ""]
    lines += [f"- **{markdown_text(k)}**: {markdown_text(v)}" for k, v in context.items()]
    lines += comparison_markdown(comparison)
    for figure in figures:
        lines += ["", f"## {markdown_text(figure.title)}", "", f"![{markdown_text(figure.title)}](figures/{figure.name}.png)", "",
                  f"Figure as [SVG](figures/{figure.name}.svg); plotted points as [CSV](data/{figure.name}.csv)."]  # fmt: skip
    lines += ["", "## Runs", "", markdown_table(table_for_report(summary)), ""]
    return "\n".join(lines)


def report_files(title: str, figures: list[views.Figure], summary: pd.DataFrame, context: dict[str, str], comparison: stats.Comparison | None = None) -> dict[str, bytes]:
    """The Markdown report and everything it links: {relative path: content}; with `comparison`,
    data/comparison.csv (one row per group of repeats: README, "Is the difference real?")."""
    files = {"report.md": report_markdown(title, figures, summary, context, comparison).encode(), "data/summary.csv": to_csv(summary)}
    if comparison is not None:
        files["data/comparison.csv"] = to_csv(comparison.table)
    for figure in figures:
        files[f"figures/{figure.name}.svg"] = to_svg(figure.chart).encode()
        files[f"figures/{figure.name}.png"] = to_png(figure.chart)
        files[f"data/{figure.name}.csv"] = to_csv(figure.data)
    return files


def report_zip(title: str, figures: list[views.Figure], summary: pd.DataFrame, context: dict[str, str], comparison: stats.Comparison | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in report_files(title, figures, summary, context, comparison).items():
            archive.writestr(path, content)
    return buffer.getvalue()


def context_lines(uri: str, experiments: list[str], filters: dict[str, object]) -> dict[str, str]:
    shown = {k: v for k, v in filters.items() if v not in (None, "", [], ())}
    return {
        "tracking store": store.display_uri(uri),
        "experiments": ", ".join(experiments),
        "filters": "; ".join(f"{k}={v}" for k, v in shown.items()) or "none",
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.report", description="Write the dashboard's figures and summary as a report, without a browser.")
    parser.add_argument("--experiment", action="append", default=[], help=f"experiment name (repeat for several; default {contract.DEFAULT_EXPERIMENT})")
    parser.add_argument("--filter", default="", help="MLflow search filter, e.g. \"params.stage = 'full'\"")
    parser.add_argument("--metric", default=contract.ACCURACY, help="metric of the curve chart (accuracy, loss, learning_rate, ...)")
    parser.add_argument("--smoothing", type=float, default=0.0, help="EMA weight in [0, 1); 0 draws raw values")
    parser.add_argument("--group", action="store_true", help="average repeats that differ only in seed")
    parser.add_argument("--join", action="store_true", help="draw a fine-tuning run as the continuation of the run it started from")
    parser.add_argument("--compare", default=stats.BEST_VAL_ACCURACY.name, choices=list(stats.STATISTICS), help="what the verdicts compare per run (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    uri = store.tracking_uri()
    try:
        client = store.open_client(uri)
        experiments = run_search.list_experiments(client)
        names = args.experiment or [contract.DEFAULT_EXPERIMENT]
        chosen = experiments[experiments["name"].isin(names)]
        if chosen.empty:
            print(f"no experiment named {', '.join(names)} in {store.display_uri(uri)}", file=sys.stderr)
            return 2
        runs = run_search.search_runs(client, list(chosen["experiment_id"]), args.filter)
        history = frames.tidy_history(histories.HistoryCache().load(client, runs), runs)
    except store.StoreError as error:
        print(error, file=sys.stderr)
        return 1
    if runs.empty:
        print("no runs match; nothing to report", file=sys.stderr)
        return 2
    options = curve_data.CurveOptions(metric=args.metric, smoothing=args.smoothing, group=args.group, join=args.join, log_y=args.metric == contract.LOSS)
    built = views.build(runs, history, options, now_ms=time.time() * 1000, stale_after_s=600, ui_base=store.ui_base_url(uri))
    context = context_lines(uri, list(chosen["name"]), {"filter": args.filter, "metric": args.metric, "smoothing": args.smoothing})
    title = f"Learning-rate study: {', '.join(chosen['name'])}"
    comparison = built.comparison(args.compare)
    args.out.mkdir(parents=True, exist_ok=True)
    for path, content in report_files(title, built.figures(), built.summary, context, comparison).items():
        target = args.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    (args.out / "report.html").write_text(report_html(title, built.figures(), built.summary, context, comparison))
    for line in stats.sentences(comparison):
        print(line)
    print(f"wrote {args.out / 'report.html'} and {args.out / 'report.md'} ({len(runs)} runs; verdicts in {args.out / 'data' / 'comparison.csv'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
