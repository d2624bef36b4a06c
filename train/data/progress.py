"""Progress bars for long work before training (scanning, preparing images): counts, rate and ETA.

tqdm on stderr; when stderr is not a terminal (a log file, `mlflow run` under CI) it
redraws at most every 10 s so logs stay short.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

MIN_ITEMS = 200  # below this the work takes a moment: no bar


def progress_bar(total: int, desc: str, unit: str = "file") -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=total < MIN_ITEMS,
                mininterval=0.5 if interactive else 10, dynamic_ncols=interactive, ascii=not interactive)
