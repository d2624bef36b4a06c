"""A chart in the page's form: the Vega-Lite dict the page sends, its data inline in the JSON."""

from __future__ import annotations

import json

# Properties only a top-level Vega-Lite spec may have.
TOP_LEVEL_ONLY = ("$schema", "config", "autosize", "padding", "background", "usermeta")


def page_spec(chart) -> dict:
    """`chart` as the Vega-Lite dict the page sends: the same chart, its data inline in the JSON.

    Streamlit moves a spec's top-level `data` and `datasets` into Arrow tables, and its front end
    turns those back into JavaScript rows one cell at a time: about 0.5 s for the 4,000 points x 6
    fields of 40 runs on a 2-core machine, seconds for 200 runs. Data inline in a nested view stay
    JSON, which the browser parses in milliseconds. So named datasets are written into the views
    that use them, and a chart with top-level data is wrapped in a one-view `vconcat` (the
    picture is the same). The chart is not validated again here: the builders' output is.
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
                out[key] = {**{k: v for k, v in value.items() if k != "name"}, "values": datasets[value["name"]]}
                if typed:
                    out[key]["format"] = {**out[key].get("format", {}), "parse": None}
            else:
                out[key] = _inline_data(value, datasets, typed)
        return out
    if isinstance(node, list):
        return [_inline_data(item, datasets, typed) for item in node]
    return node
