"""How the page, the report and the sweep write a learning rate (one spelling, everywhere), and read a number.

A leaf module (no imports from the app), so the run search, the statistics and the charts all
use it: `1e-5`, `3e-4`, `2.5e-3`, the spelling of the chart axes (d3's `~e`, less its `+`).
"""

from __future__ import annotations

import math


def format_lr(value) -> str:
    """A rate as text, whatever its param's spelling was ("1e-5", "1e-05", "0.00001" -> "1e-5");
    three significant digits at most; "" for a missing rate."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def to_float(text) -> float:
    """A param or tag as a number; NaN when it is none (missing, empty, not a number)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan
