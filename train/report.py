"""Figures logged with a run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def confusion_matrix_figure(labels: np.ndarray, predicted: np.ndarray, class_names: list[str]):
    matrix = confusion_matrix(labels, predicted, len(class_names))
    size = max(4, 0.6 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axes.set_title(f"validation confusion matrix (accuracy {accuracy:.3f})")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    figure.tight_layout()
    plt.close(figure)
    return figure
