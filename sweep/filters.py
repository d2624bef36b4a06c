"""Values in MLflow filter strings, quoted so that a name with an apostrophe still matches.

MLflow reads `'bob''s'` and `'bob\'s'` literally, quotes and all, but takes a double-quoted
`"bob's"` as a string as well. So a value with an apostrophe goes in double quotes; a name
holding both kinds of quote is refused where the user gives it (sweep/plan.py check_quotable).
"""

from __future__ import annotations


def quoted(value: str) -> str:
    """`'value'`, or `"value"` when it holds an apostrophe: `f"tags.x = {quoted(name)}"`."""
    return f'"{value}"' if "'" in value else f"'{value}'"
