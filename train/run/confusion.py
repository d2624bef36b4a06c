"""The validation confusion matrix of a run: counted, drawn and logged as a figure and as data.

Up to CELL_TEXT_MAX_CLASSES classes every cell carries its count. Beyond that a count per
cell is unreadable and slow (101 classes: 10,201 text objects, ~30 s to draw and save), so
the figure is a heat map with the most confused pairs listed beside it; the counts
themselves are in the data file either way, for the dashboard and the report.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CELL_TEXT_MAX_CLASSES = 30  # above this, no count in each cell: a heat map and the most confused pairs
TICK_LABELS_MAX_CLASSES = 150  # above this, class names cannot be read on the axes: the ticks are indices
MOST_CONFUSED = 15  # how many (true, predicted) pairs the figure lists and the data file keeps
HEAT_MAP_INCHES = 12  # the matrix's side for many classes (at 100 dpi: 1,200 px, whatever the class count)
NAME_CHARACTERS = 28  # class names longer than this are cut in the list of pairs


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(matrix, (np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)), 1)
    return matrix


def plain_text(text: str) -> str:
    """`text` as matplotlib draws it literally: an even number of '$' would start mathtext
    (and a class folder named 'a$b$c' would crash the figure after training); '\\$' is a
    literal dollar sign, and nothing else in a name is special without usetex."""
    return text.replace("$", r"\$")


def most_confused(matrix: np.ndarray, class_names: list[str], limit: int = MOST_CONFUSED) -> list[dict]:
    """The off-diagonal cells with the most images, largest first: true class, predicted class, count."""
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    flat = np.argsort(-off_diagonal, axis=None, kind="stable")[:limit]  # ties in row, then column order
    pairs = []
    for row, column in zip(*np.unravel_index(flat, matrix.shape), strict=True):
        if off_diagonal[row, column] == 0:
            break
        pairs.append({"true": class_names[row], "predicted": class_names[column], "count": int(off_diagonal[row, column])})
    return pairs


def confusion_matrix_data(matrix: np.ndarray, class_names: list[str]) -> dict:
    """What the data file holds (the layout of evaluation.json's confusion_matrix, plus names and pairs)."""
    return {
        "class_names": list(class_names),
        "rows": "true class",
        "columns": "predicted class",
        "counts": matrix.tolist(),
        "most_confused": most_confused(matrix, class_names),
    }


def confusion_matrix_figure(labels: np.ndarray, predicted: np.ndarray, class_names: list[str]):
    """The figure; its first axes hold the matrix (callers may retitle it)."""
    matrix = confusion_matrix(labels, predicted, len(class_names))
    if len(class_names) <= CELL_TEXT_MAX_CLASSES:
        figure = _counted_cells(matrix, class_names)
    else:
        figure = _heat_map(matrix, class_names)
    plt.close(figure)
    return figure


def log_confusion_matrix(labels: np.ndarray, predicted: np.ndarray, class_names: list[str], figure_file: str, data_file: str) -> np.ndarray:
    """Log the figure and the counts as run artifacts; return the matrix."""
    import mlflow

    matrix = confusion_matrix(labels, predicted, len(class_names))
    mlflow.log_figure(confusion_matrix_figure(labels, predicted, class_names), figure_file)
    mlflow.log_text(json.dumps(confusion_matrix_data(matrix, class_names)), data_file)
    return matrix


def _title(matrix: np.ndarray) -> str:
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    return f"validation confusion matrix (accuracy {accuracy:.3f})"


def _counted_cells(matrix: np.ndarray, class_names: list[str]):
    names = [plain_text(name) for name in class_names]
    size = max(4, 0.6 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(_title(matrix))
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    figure.tight_layout()
    return figure


def _heat_map(matrix: np.ndarray, class_names: list[str]):
    count = len(class_names)
    figure = plt.figure(figsize=(HEAT_MAP_INCHES + 6, HEAT_MAP_INCHES + 1))
    axes = figure.add_axes((0.1, 0.1, 0.6, 0.82))
    listing = figure.add_axes((0.75, 0.1, 0.24, 0.82))
    shown = axes.imshow(matrix, cmap="Blues", interpolation="nearest")
    figure.colorbar(shown, ax=axes, fraction=0.04, pad=0.01, label="images")
    if count <= TICK_LABELS_MAX_CLASSES:
        # A row is HEAT_MAP_INCHES * 72 / count points high; the names fit in about 80 % of it.
        font = min(8.0, 0.8 * HEAT_MAP_INCHES * 0.82 * 72 / count)
        names = [plain_text(name) for name in class_names]
        axes.set_xticks(range(count), names, rotation=90, fontsize=font)
        axes.set_yticks(range(count), names, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(_title(matrix))
    listing.axis("off")
    listing.text(0, 1, _pairs_text(matrix, class_names), va="top", ha="left", family="monospace", fontsize=9)
    return figure


def _pairs_text(matrix: np.ndarray, class_names: list[str]) -> str:
    pairs = most_confused(matrix, class_names)
    if not pairs:
        return "no class confused with another"

    def cut(name: str) -> str:
        return plain_text(name if len(name) <= NAME_CHARACTERS else name[: NAME_CHARACTERS - 1] + "…")

    lines = ["most confused (true -> predicted: images)"]
    lines += [f"{cut(pair['true'])}\n    -> {cut(pair['predicted'])}: {pair['count']}" for pair in pairs]
    return "\n".join(lines)
