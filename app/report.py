"""Export: charts as SVG and PNG rendered on the server, plotted points as CSV, and a report.

Figures are rendered by vl-convert (no browser), so a report can be built on a machine
with nothing but Python: `python -m app.report --experiment lr-study --out report/`
writes report.html (figures inline) and report.md with figures/ and data/ beside it; the
page offers the same as one HTML file or a zip.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import math
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import altair as alt
import click
import pandas as pd
from mlflow.exceptions import MlflowException

from app.analysis import curve_data, stats
from app.data import history_cache, run_search, store
from app.page import first_chart, views
from train import contract, csv_safe
from train.messages import first_line

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
            table[column] = table[column].map(lambda v, d=digits: _fixed(v, d))
    table["lr"] = summary["lr"].map(run_search.format_lr)
    return table.fillna("").astype(str)


def _fixed(value: float, digits: int) -> str:
    """A number to `digits` places; NaN blank; ±inf (or MLflow's ±1.8e308 for it) as inf, never 309 digits."""
    if pd.isna(value):
        return ""
    if not stats.finite([value])[0]:
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


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
        table[column] = table[column].map(lambda v: _fixed(v, 4))
    table["lr"] = table["lr"].map(lambda v: "" if pd.isna(v) else stats.lr_text(v))
    return table.fillna("").astype(str)


def sentence_html(sentence: str) -> str:
    """A sentence of ours as HTML: escaped, its `command` spans as <code> (never shown as backticks)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(sentence))


def sentence_markdown(sentence: str) -> str:
    """A sentence of ours as literal Markdown, its `command` spans kept as code spans."""
    parts = sentence.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code span, all text
        return markdown_text(sentence)
    return "".join(markdown_text(part) if i % 2 == 0 else f"`{part}`" for i, part in enumerate(parts))


def comparison_html(comparison: stats.Comparison | None) -> list[str]:
    if comparison is None:
        return []
    headline = [f"<p><b>{sentence_html(line)}</b></p>" if i == 0 else f"<p><i>{sentence_html(line)}</i></p>" for i, line in enumerate(stats.headline(stats.stages(comparison)))]
    said = [f"<li>{sentence_html(s)}</li>" for s in stats.sentences(comparison)] or ["<li>No finished run to compare.</li>"]
    notes = [f"<p><i>{html.escape(note)}</i></p>" for note in comparison.notes]
    table = comparison_for_report(comparison).to_html(index=False, escape=True, border=0) if not comparison.table.empty else ""
    return [f"<h2>{COMPARISON_TITLE}</h2>", *headline, f"<p>{html.escape(stats.explanation(comparison))}</p><ul>", *said, "</ul>", *notes, table]


def comparison_markdown(comparison: stats.Comparison | None) -> list[str]:
    if comparison is None:
        return []
    lines = ["", f"## {COMPARISON_TITLE}", ""]
    lines += [f"{sentence_markdown(line)}\n" for line in stats.headline(stats.stages(comparison))]
    lines += [markdown_text(stats.explanation(comparison)), ""]
    lines += [f"- {sentence_markdown(s)}" for s in stats.sentences(comparison)] or ["- No finished run to compare."]
    lines += ["", *[f"*{markdown_text(note)}*" for note in comparison.notes]]
    if not comparison.table.empty:
        lines += ["", markdown_table(comparison_for_report(comparison)), "",
                  "The whole table, with seeds needed and member runs: [CSV](data/comparison.csv); across stages: [CSV](data/stages.csv)."]  # fmt: skip
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
        name = safe_name(figure.name)
        lines += ["", f"## {markdown_text(figure.title)}", "", f"![{markdown_text(figure.title)}](figures/{name}.png)", "",
                  f"Figure as [SVG](figures/{name}.svg); plotted points as [CSV](data/{name}.csv)."]  # fmt: skip
    lines += ["", "## Runs", "", markdown_table(table_for_report(summary)), ""]
    return "\n".join(lines)


def report_files(title: str, figures: list[views.Figure], summary: pd.DataFrame, context: dict[str, str], comparison: stats.Comparison | None = None) -> dict[str, bytes]:
    """The Markdown report and everything it links: {relative path: content}; with `comparison`,
    data/comparison.csv (one row per group of repeats) and data/stages.csv (per model, each stage's
    best against the best stage): README, "Is the difference real?"."""
    files = {"report.md": report_markdown(title, figures, summary, context, comparison).encode(), "data/summary.csv": to_csv(summary)}
    if comparison is not None:
        files["data/comparison.csv"] = to_csv(comparison.table)
        files["data/stages.csv"] = to_csv(stats.stages(comparison))
    for figure in figures:
        name = safe_name(figure.name)
        files[f"figures/{name}.svg"] = to_svg(figure.chart).encode()
        files[f"figures/{name}.png"] = to_png(figure.chart)
        files[f"data/{name}.csv"] = to_csv(figure.data)
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


class ReportError(click.ClickException):
    """Bad input or an output the report cannot write: one line, exit status 2."""

    exit_code = 2


def check_out(out: Path) -> Path:
    """The output folder exists (or is made now) and takes files: checked before any run is read."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file; give a folder for the report (it is made if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReportError(f"--out {out} cannot be made ({error.strerror or error}); give a folder you can write to") from None
    try:  # a real write: os.access says yes to root on a read-only mount
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise ReportError(f"--out {out} is read-only ({error.strerror or error}); give a folder you can write to") from None
    return out


def safe_name(name: str) -> str:
    """A figure's file name from text a store may hold (a metric named 'x/../../escaped'): one path part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "figure"


def write_files(out: Path, files: dict[str, bytes]) -> None:
    """Every file under `out` and nowhere else, whatever its name says."""
    root = out.resolve()
    for path, content in files.items():
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise ReportError(f"refusing to write {path}: it would land outside --out {out}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _fraction(name: str, upper: float):
    """A click callback: a finite number in [0, upper) (`nan` passes click's own FloatRange)."""

    def check(_ctx, _param, value: float) -> float:
        if not (math.isfinite(value) and 0 <= value < upper):
            raise click.BadParameter(f"must be a number from 0 to below {upper:g} (got {value}); {name}")
        return value

    return check


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--experiment", "experiments", multiple=True, help=f"Experiment name (repeat for several; default {contract.DEFAULT_EXPERIMENT}).")
@click.option("--filter", "filter_string", default="", help="MLflow search filter, e.g. \"params.stage = 'full'\".")
@click.option("--metric", default=contract.ACCURACY, show_default=True, help="Metric of the curve chart (accuracy, loss, learning_rate, ...).")
@click.option("--smoothing", type=float, default=0.0, callback=_fraction("EMA weight, 0 draws raw values", 1.0), help="EMA weight in [0, 1); 0 draws raw values.")
@click.option("--group", is_flag=True, help="Average repeats (runs of one configuration).")
@click.option("--join", is_flag=True, help="Draw a fine-tuning run as the continuation of the run it started from.")
@click.option("--compare", "statistic", default=stats.BEST_VAL_ACCURACY.name, show_default=True, type=click.Choice(list(stats.STATISTICS)), help="What the verdicts compare per run.")
@click.option("--margin", type=float, default=stats.DEFAULT_MARGIN, show_default=True, callback=_fraction("the equivalence margin, e.g. 0.01", 1.0),
              help="Differences whose 95% interval lies inside ±margin are 'equivalent'.")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True, help="Output folder.")
def command(experiments, filter_string, metric, smoothing, group, join, statistic, margin, out) -> None:
    """Write the dashboard's figures, verdicts and summary as a report, without a browser."""
    check_out(out)
    store.fail_fast()
    uri = store.tracking_uri()
    client = store.open_client(uri)  # a reader: a store that does not exist is one line, never created
    known = run_search.list_experiments(client)
    names = list(experiments) or [contract.DEFAULT_EXPERIMENT]
    chosen = known[known["name"].isin(names)]
    missing = [name for name in names if name not in set(known["name"])]
    if missing:
        there = ", ".join(sorted(known["name"])) or "none"
        raise ReportError(f"no experiment named {', '.join(missing)} in {store.display_uri(uri)}; the experiments there: {there}")
    runs = _search(client, list(chosen["experiment_id"]), filter_string, uri)
    if runs.empty:
        raise ReportError("no runs match; nothing to report")
    options = curve_data.CurveOptions(metric=metric, smoothing=smoothing, group=group, join=join, log_y=metric == contract.LOSS)
    # As the page: histories read only where a figure or a summary needs them (`first_chart.build_views`).
    built = first_chart.build_views(client, history_cache.HistoryCache(), runs, runs, options, uri=uri, now_ms=time.time() * 1000, stale_after_s=600, ui_base=store.ui_base_url(uri))
    context = context_lines(uri, list(chosen["name"]), {"filter": filter_string, "metric": metric, "smoothing": smoothing, "margin": margin})
    context["runs"] = runs_line(runs, built.training)
    title = f"Learning-rate study: {', '.join(chosen['name'])}"
    comparison = built.comparison(statistic, margin)
    figures = built.figures()
    write_files(out, report_files(title, figures, built.summary, context, comparison))
    (out / "report.html").write_text(report_html(title, figures, built.summary, context, comparison))
    for line in [*stats.headline(stats.stages(comparison)), *stats.sentences(comparison)]:
        click.echo(line)
    click.echo(f"wrote {out / 'report.html'} and {out / 'report.md'} ({context['runs']}; verdicts in {out / 'data' / 'comparison.csv'} and {out / 'data' / 'stages.csv'})")


def _search(client, experiment_ids: list[str], filter_string: str, uri: str) -> pd.DataFrame:
    try:
        return run_search.search_runs(client, experiment_ids, filter_string)
    except MlflowException as error:
        if error.error_code == "INVALID_PARAMETER_VALUE" and filter_string:
            raise ReportError(f"--filter {filter_string!r} is not an MLflow search filter ({first_line(error, 160)}); e.g. \"params.stage = 'full'\"") from None
        raise store.explain(error, uri) from None


def runs_line(runs: pd.DataFrame, training: pd.DataFrame) -> str:
    """How many runs the report found and which it left out of its table: "11 runs: 9 training runs
    in the table; left out: 1 lr_find, 1 sweep (parent)" (the count matches the table)."""
    others = runs.loc[~runs.index.isin(training.index), "kind"].fillna("").replace("", "no kind").value_counts()
    if others.empty:
        return f"{len(training)} training run(s)"
    named = {contract.KIND_SWEEP: "sweep (parent)", contract.KIND_EVALUATE: "evaluate", contract.KIND_LR_FIND: "lr_find"}
    left = ", ".join(f"{count} {named.get(kind, kind)}" for kind, count in others.items())
    return f"{len(runs)} runs: {len(training)} training run(s) in the table; left out: {left}"


def main(argv: list[str] | None = None) -> int:
    """Run the command; bad input, an unwritable --out or a store that fails is one line, not a traceback."""
    try:
        command.main(args=argv, prog_name="python -m app.report", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:  # a usage error (2), ReportError (2)
        return _said(error.format_message(), error.exit_code)
    except store.StoreError as error:
        return _said(str(error), 1)
    except OSError as error:  # the disk filled or a file vanished while writing
        return _said(f"writing the report failed: {error}", 1)
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _said("interrupted", 130)
    return 0


def _said(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
