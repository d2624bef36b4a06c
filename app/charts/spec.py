"""A chart in the page's form: the Vega-Lite dict the page sends, its data inline in the JSON."""

from __future__ import annotations

import base64
import json

# Properties only a top-level Vega-Lite spec may have.
TOP_LEVEL_ONLY = ("$schema", "config", "autosize", "padding", "background", "usermeta")
# A dataset of more rows than this travels as a `data:` URL that Vega loads itself (see page_spec).
DEFERRED_ROWS = 500
DATA_URL_PREFIX = "data:application/json;base64,"


def page_spec(chart) -> dict:
    """`chart` as the Vega-Lite dict the page sends: the same chart, its data inline in the JSON.

    Streamlit moves a spec's top-level `data` and `datasets` into Arrow tables, and its front end
    turns those back into JavaScript rows one cell at a time: about 0.5 s for the 4,000 points x 6
    fields of 40 runs on a 2-core machine, seconds for 200 runs. Data inline in a nested view stay
    JSON, which the browser parses in milliseconds. So named datasets are written into the views
    that use them, and a chart with top-level data is wrapped in a one-view `vconcat` (the
    picture is the same). The chart is not validated again here: the builders' output is.

    A dataset of more than DEFERRED_ROWS rows (the curve chart's points) goes in as a `data:` URL
    instead, base64 JSON that Vega fetches and parses itself. Its loading is asynchronous, so the
    browser draws the small charts above it (the forest plot of the answer) first, instead of after
    it has worked through the curve chart's thousands of rows in the same task (at 1,000 runs a new
    session's forest plot came after 3.76 s instead of 4.58 s, a returning browser's after 2.07 s
    instead of 2.87 s: `python -m bench.bench_dashboard --skip-loaders --render 1000x100 --old-rev REV`).
    """
    spec = chart.to_dict(validate=False)
    datasets = spec.pop("datasets", {})
    # Values written from pandas are typed already: no per-point parsing (Vega-Lite adds a
    # toNumber() for each point otherwise), unless a temporal field needs its strings parsed.
    typed = '"temporal"' not in json.dumps(spec)
    spec = _inline_data(spec, datasets, typed)
    if "data" not in spec:
        return spec
    top = {key: spec.pop(key) for key in TOP_LEVEL_ONLY if key in spec}
    params = spec.get("params", [])
    if params and all("views" in p or "select" not in p for p in params):
        top["params"] = spec.pop("params")  # a view inside a composition may not hold them
    return {**top, "vconcat": [spec]}


def _inline_data(node, datasets: dict, typed: bool):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "data" and isinstance(value, dict) and value.get("name") in datasets:
                out[key] = _data(value, datasets[value["name"]], typed)
            else:
                out[key] = _inline_data(value, datasets, typed)
        return out
    if isinstance(node, list):
        return [_inline_data(item, datasets, typed) for item in node]
    return node


def _data(node: dict, rows: list[dict], typed: bool) -> dict:
    """A view's `data`, its named dataset written in: inline values, or a data: URL when large."""
    out = {k: v for k, v in node.items() if k != "name"}
    if len(rows) > DEFERRED_ROWS:
        out["url"] = DATA_URL_PREFIX + base64.b64encode(json.dumps(rows, separators=(",", ":")).encode()).decode("ascii")
        out["format"] = {**out.get("format", {}), "type": "json"}
    else:
        out["values"] = rows
    if typed:
        out["format"] = {**out.get("format", {}), "parse": None}
    return out


def data_url_rows(url: str) -> list[dict]:
    """The rows a data: URL written by page_spec holds."""
    return json.loads(base64.b64decode(url.removeprefix(DATA_URL_PREFIX)))
