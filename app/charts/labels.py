"""The numbers beside the curves ("1e-3  0.912" at a line's best point), placed so that none
overlaps another and none covers a best point.

Vega-Lite draws text where it is told and moves nothing out of the way, so the placement is
done here, in pixels: the curve chart fixes its y domain (`y_domain`) and lets each column's x
domain be its epochs exactly (no rounding), so a value and an epoch map to one pixel. Each
label tries spots around its point (right or left of it, above or below, then further up or
down); of the spots inside the plot that meet no placed label and no best-point diamond, the
one with the fewest curves through it wins, each step further from the point counting as
`STEP_COST` of a curve (a label far from its point reads as another curve's); a label with no
free spot is dropped (its tooltip still says it). The best lines are placed first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# A bold 11 px label in Vega's default sans-serif: at most this wide per character, this tall.
CHAR_PX = 7.0
LINE_PX = 14.0
MARK_PX = 7.0  # half the side of the box around a best-point diamond (size 90) that no label may touch
GAP_PX = 8.0  # between a point and its label (more than MARK_PX: a label right above its point clears the diamond)
LABELS_PER_FACET = 5
STEP_COST = 0.4  # a label two steps further out beats one a curve runs through
COLUMNS = ["line", "note", "note_x", "note_y"]


def y_domain(points: pd.DataFrame, log_y: bool, extra: list[float] | tuple = ()) -> list[float]:
    """The curve chart's y range: every drawn value (bands and smoothed lines too) and `extra` (the
    chance line), with 3% room on each side; in log units on a log axis (then back)."""
    columns = [c for c in ("value", "smoothed", "low", "high") if c in points]
    values = np.concatenate([points[c].to_numpy(dtype=float) for c in columns] + [np.asarray(extra, dtype=float)])
    values = values[np.isfinite(values)]
    if log_y:
        values = np.log10(values[values > 0])
    if values.size == 0:
        return [0.0, 1.0]
    low, high = float(values.min()), float(values.max())
    room = (high - low) * 0.03 or max(abs(high) * 0.05, 0.05)
    low, high = low - room, high + room
    return [10.0**low, 10.0**high] if log_y else [low, high]


def text_of(best: pd.DataFrame, chance: float | None = None) -> pd.Series:
    """"1e-3  0.912", with the variant ("1e-3 cosine  0.912") where a column's labels differ in it;
    "at chance" after a value that never left the `chance` level (1 / classes)."""
    several = best.groupby("facet")["variant"].transform("nunique") > 1
    variant = (" " + best["variant"].astype(str)).where(several, "")
    values = best["value"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}" if 0.01 <= abs(v) < 10 else f"{v:.3g}")
    stuck = best["value"].map(lambda v: chance is not None and pd.notna(v) and v <= chance * 1.1 + 0.01)
    return (best["lr_label"].fillna("").astype(str) + variant + "  " + values + stuck.map({True: " at chance", False: ""})).str.strip()


def place(points: pd.DataFrame, *, lower_is_better: bool, log_y: bool, width: float, height: float, domain: list[float], chance: float | None = None) -> pd.DataFrame:
    """Per labelled line: its text and the top-left corner of its label in data units (`COLUMNS`)."""
    marks = points[points["best"].fillna(False).astype(bool) & points["role"].isin(["run", "mean"])].dropna(subset=["value"])
    if log_y:
        marks = marks[marks["value"] > 0]
    if marks.empty:
        return pd.DataFrame(columns=COLUMNS)
    marks = marks.assign(facet=marks["facet"].fillna(""), variant=marks["variant"].fillna(""))
    best = marks.sort_values("value", ascending=lower_is_better, kind="stable").drop_duplicates(["facet", "color", "variant"])
    best = best.groupby("facet", sort=False).head(LABELS_PER_FACET)
    best = best.assign(note=text_of(best, chance))
    to_axis = np.log10 if log_y else (lambda v: np.asarray(v, dtype=float))
    low, high = (float(v) for v in to_axis(np.asarray(domain, dtype=float)))
    epochs = points.assign(facet=points["facet"].fillna("")).groupby("facet")["epoch"].agg(["min", "max"])
    curves = _segments(points, to_axis, log_y)
    rows = []
    for facet, column in best.groupby("facet", sort=False):
        start, end = float(epochs.at[facet, "min"]), float(epochs.at[facet, "max"])
        span = (end - start) or 1.0

        def px(epoch, start=start, span=span):
            return (np.asarray(epoch, dtype=float) - start) / span * width

        def from_axis(axis_value):  # a value already on the axis (log10 on a log axis) to its pixel row
            return height - (axis_value - low) / (high - low) * height

        def py(value):
            return from_axis(to_axis(value))

        facet_marks = marks[marks["facet"] == facet]
        diamonds = np.column_stack([px(facet_marks["epoch"]), py(facet_marks["value"].to_numpy(dtype=float))])
        x1, y1, x2, y2, curve = curves.get(facet, np.empty((5, 0)))
        segments = np.column_stack([px(x1), from_axis(y1), px(x2), from_axis(y2), curve])
        placed: list[tuple[float, float, float, float]] = []
        for _, label in column.iterrows():
            box = _spot(float(px(label["epoch"])), float(py(label["value"])), len(label["note"]) * CHAR_PX, width, height, placed, diamonds, segments)
            if box is None:
                continue
            placed.append(box)
            left, top = box[0], box[1]
            value = low + (height - top) / height * (high - low)
            rows.append({"line": label["line"], "note": label["note"], "note_x": start + left / width * span, "note_y": 10.0**value if log_y else value})
    return pd.DataFrame(rows, columns=COLUMNS)


def _segments(points: pd.DataFrame, to_axis, log_y: bool) -> dict[str, np.ndarray]:
    """Per column: its drawn curves (runs and group means, raw and smoothed) as segments in data
    units (epoch, value on the axis), rows x1, y1, x2, y2, curve number: what a label should not
    sit on. One sort for every column (a page draws up to some hundred thousand points)."""
    drawn = points[points["role"].isin(["run", "mean"])]
    facet_codes, facets = pd.factorize(drawn["facet"].fillna(""))
    line_codes, split_codes = pd.factorize(drawn["line"])[0], pd.factorize(drawn["split"])[0]
    epochs = drawn["epoch"].to_numpy(dtype=float)
    order = np.lexsort((epochs, split_codes, line_codes, facet_codes))
    facet_codes, epochs = facet_codes[order], epochs[order]
    key = np.column_stack([facet_codes, line_codes[order], split_codes[order]])
    same = (key[1:] == key[:-1]).all(axis=1)
    curve = np.concatenate([[0], np.cumsum(~same)])
    found = []
    for number, column in enumerate(c for c in ("value", "smoothed") if c in drawn):
        values = drawn[column].to_numpy(dtype=float)[order]
        ok = np.isfinite(values) & ((values > 0) if log_y else True)
        y = np.where(ok, to_axis(np.where(ok, values, 1.0)), np.nan)
        keep = same & ok[1:] & ok[:-1]
        found.append(np.stack([epochs[:-1], y[:-1], epochs[1:], y[1:], curve[1:] * 2 + number, facet_codes[1:]])[:, keep])
    if not found:
        return {}
    every = np.concatenate(found, axis=1)
    return {facet: every[:5, every[5] == code] for code, facet in enumerate(facets)}


def _crossings(box, segments: np.ndarray) -> int:
    """How many curves pass through `box` (a curve is a function of the epoch: over the box's
    x span a segment's y runs between its values at the span's ends)."""
    if not len(segments):
        return 0
    x1, y1, x2, y2, curve = segments.T
    left, right = np.maximum(x1, box[0]), np.minimum(x2, box[2])
    inside = left <= right
    slope = np.divide(y2 - y1, x2 - x1, out=np.zeros_like(y1), where=x2 > x1)
    at_left, at_right = y1 + slope * (left - x1), y1 + slope * (right - x1)
    through = inside & (np.maximum(at_left, at_right) >= box[1]) & (np.minimum(at_left, at_right) <= box[3])
    return len(np.unique(curve[through]))


def _spot(x: float, y: float, w: float, width: float, height: float, placed, diamonds, segments: np.ndarray) -> tuple[float, float, float, float] | None:
    """The box (left, top, right, bottom) for a label of width `w` at point (x, y): of the free ones
    (inside the plot, on no placed label or diamond), the one fewest curves cross, each step away
    from the point costing `STEP_COST`; None when none is free."""
    right, left = x + GAP_PX, x - GAP_PX - w
    centred = min(max(x - w / 2, 0.0), width - w)  # above or below the point, moved in from the column's edge
    above, below = y - GAP_PX - LINE_PX, y + GAP_PX
    tops = [(0, above), (0, below)] + [(k, t) for k in range(1, 7) for t in (above - k * LINE_PX, below + k * LINE_PX)]
    reach = GAP_PX + 8 * LINE_PX  # the spots lie within it above and below the point, and within w + GAP_PX either side
    near = segments[
        (segments[:, 2] >= x - GAP_PX - w) & (segments[:, 0] <= x + GAP_PX + w)
        & (np.fmax(segments[:, 1], segments[:, 3]) >= y - reach) & (np.fmin(segments[:, 1], segments[:, 3]) <= y + reach)
    ]  # fmt: skip
    best = None  # (cost, box): the cheapest free spot so far
    for step, top in tops:
        for side in (right, left, centred):
            box = (side, top, side + w, top + LINE_PX)
            if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
                continue
            if any(_overlap(box, other) for other in placed):
                continue
            if diamonds.size and ((diamonds[:, 0] + MARK_PX > box[0]) & (diamonds[:, 0] - MARK_PX < box[2]) & (diamonds[:, 1] + MARK_PX > box[1]) & (diamonds[:, 1] - MARK_PX < box[3])).any():
                continue
            cost = _crossings(box, near) + step * STEP_COST
            if cost == 0:
                return box
            if best is None or cost < best[0]:
                best = (cost, box)
    return best[1] if best else None


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def boxes(notes: pd.DataFrame, *, width: float, height: float, x_range: tuple[float, float], domain: list[float], log_y: bool = False) -> list[tuple[float, float, float, float]]:
    """The pixel boxes of one column's labels as the browser draws them (for tests and checks)."""
    to_axis = np.log10 if log_y else float
    low, high = to_axis(domain[0]), to_axis(domain[1])
    start, end = x_range
    found = []
    for _, note in notes.iterrows():
        left = (note["note_x"] - start) / ((end - start) or 1.0) * width
        top = height - (to_axis(note["note_y"]) - low) / (high - low) * height
        found.append((left, top, left + len(note["note"]) * CHAR_PX, top + LINE_PX))
    return found
