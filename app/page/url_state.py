"""The page's selection, kept in the URL so a view can be shared and reloaded.

Each setting has a session-state key (the widget's key), a type and a default. On the
first run of a session the URL's values are copied into session state; after each run
the settings that differ from their defaults are written back to the URL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping

from app.analysis import frames, numbers, stats
from train import contract

LIST, TEXT, FLOAT, INT, BOOL = "list", "text", "float", "int", "bool"

# key: (type, default)
SPEC: dict[str, tuple[str, object]] = {
    "exp": (LIST, []),
    "stage": (LIST, []),
    "model": (LIST, []),
    "schedule": (LIST, []),
    "lr": (LIST, []),
    "status": (LIST, []),
    "data": (LIST, []),
    "sweep": (LIST, []),
    "q": (TEXT, ""),
    "metric": (TEXT, frames.split_metric(contract.ACCURACY)[0]),
    "smooth": (FLOAT, 0.0),
    "logy": (BOOL, False),
    "facet": (TEXT, contract.PARAM_STAGE),
    "color": (TEXT, contract.PARAM_LR),
    "group": (BOOL, False),
    "vary": (LIST, list(frames.REPEAT_PARAMS)),
    "band": (TEXT, frames.MINMAX),
    "members": (BOOL, False),
    "join": (BOOL, False),
    "top": (INT, 60),
    "live": (BOOL, False),
    "every": (INT, 30),
    "stale": (INT, 10),
    "view": (TEXT, "Runs"),
    "stat": (TEXT, stats.BEST_VAL_ACCURACY.name),  # what the verdicts compare (app/page/comparison_view.py)
    "sband": (TEXT, frames.CI95),  # the LR-sensitivity bars: 95% interval or min–max
    "margin": (FLOAT, 0.01),  # the equivalence margin of the verdicts: DESIGN.md's default
}
# The numbers a widget accepts (its min and max): a URL value outside them is replaced by the
# default with a note, as a widget given it would stop the page with an exception.
BOUNDS: dict[str, tuple[float, float]] = {
    "smooth": (0.0, 0.95), "top": (0, 100_000), "every": (5, 3600), "stale": (1, 10_000), "margin": (0.0, 0.5),
}  # fmt: skip
GROUP_FROM_URL = "_group_from_url"  # else the page averages repeats when there are any (`curve_data.has_repeats`)
NOTES = "_url_notes"  # session-state key: what the URL asked for that the page could not use
_RESTORED = "_url_restored"


def parse(kind: str, values: list[str], default):
    """One setting from its URL values; a value that does not parse (or a NaN, an infinity) gives the default."""
    if kind == LIST:
        return [v for v in values if v != ""]
    if not values:
        return default
    text = values[-1]
    try:
        if kind == FLOAT:
            value = float(text)
            return value if math.isfinite(value) else default
        if kind == INT:
            return int(float(text))
        if kind == BOOL:
            return text.lower() in ("1", "true", "yes", "on")
    except ValueError:
        return default
    return text


def encode(kind: str, value) -> str | list[str]:
    if kind == LIST:
        return [str(v) for v in value]
    if kind == BOOL:
        return "1" if value else "0"
    return str(value)


def restore(state: MutableMapping, query: Mapping) -> None:
    """Copy the URL's settings into session state once per session; fill the rest with defaults."""
    if not state.get(_RESTORED):
        state[_RESTORED] = True
        notes = []
        for key, (kind, default) in SPEC.items():
            if key in query:
                values = query.get_all(key) if hasattr(query, "get_all") else _as_list(query[key])
                problem = _check(key, kind, values)
                state[key] = parse(kind, values, default) if not problem else default
                if problem:
                    notes.append((key, problem))
        state[NOTES] = notes
        state[GROUP_FROM_URL] = "group" in query
        if state.get("lr"):  # a link from before rates had one spelling (lr=0.001) still selects 1e-3
            state["lr"] = [_rate(value) for value in state["lr"]]
    for key, (_, default) in SPEC.items():
        if key not in state:
            state[key] = list(default) if isinstance(default, list) else default


def _check(key: str, kind: str, values: list[str]) -> str:
    """Why the URL's value of `key` cannot be used ("" when it can)."""
    if kind not in (FLOAT, INT) or not values:
        return ""
    text = values[-1].strip()
    try:
        value = float(text)
    except ValueError:
        return f"{key}={text!r} is not a number"
    if not math.isfinite(value):
        return f"{key}={text} is not a finite number"
    if kind == INT and value != int(value):
        return f"{key}={text} is not a whole number"
    low, high = BOUNDS.get(key, (-math.inf, math.inf))
    if not low <= value <= high:
        return f"{key}={text} is outside {_plain(low)} to {_plain(high)}"
    return ""


def _plain(number: float) -> str:
    return f"{number:g}" if isinstance(number, float) else f"{number:,}"


def note(state: Mapping) -> str:
    """One line about the URL's values the page replaced by defaults; "" when there are none."""
    notes = state.get(NOTES) or []
    if not notes:
        return ""
    said = "; ".join(f"{problem}, so {key} is {SPEC[key][1]}" for key, problem in notes)
    return f"This page's URL holds a value it cannot use: {said} (the default). Change it in the sidebar."


def to_query(state: Mapping) -> dict[str, str | list[str]]:
    """The settings that differ from their defaults, as URL query parameters."""
    query = {}
    for key, (kind, default) in SPEC.items():
        if key in state and state[key] != default and not (kind == LIST and not state[key]):
            query[key] = encode(kind, state[key])
    return query


def _rate(text: str) -> str:
    try:
        return numbers.format_lr(float(text))
    except ValueError:
        return text


def _as_list(value) -> list[str]:
    return list(value) if isinstance(value, (list, tuple)) else [value]
