"""Chance level: a run that cannot learn, said before its first epoch, and one that did not, said at its end.

`full` and `head` are transfer stages: with weights=none their base is random (and frozen, for
`head`), so they learn little or nothing. A run whose best validation accuracy never rose above
guessing (1 / classes, plus a tolerance for a small validation set's noise) is tagged
`contract.TAG_AT_CHANCE` so the page and the report can set it apart.
"""

from __future__ import annotations

import mlflow

from train import contract
from train.config import TrainConfig

CHANCE_TOLERANCE = 0.02  # of accuracy above 1 / classes that still counts as guessing


def random_base_warning(config: TrainConfig) -> str | None:
    """One line before the first epoch when the stage expects pretrained weights and gets none."""
    if config.weights != "none" or config.stage not in ("full", "head"):
        return None
    frozen = ", frozen," if config.stage == "head" else ""
    return (f"warning: stage={config.stage} with weights=none trains on a random{frozen} base: expect accuracy near chance; "
            f"use weights=imagenet (or a weights file), or stage=scratch to train from random weights on purpose")


def at_chance(best_val_accuracy: float, num_classes: int) -> bool:
    return best_val_accuracy <= 1 / num_classes + CHANCE_TOLERANCE


def note_if_at_chance(best_val_accuracy: float, num_classes: int) -> bool:
    """Tag the active run and say so in one line when it never left chance; return whether it did not."""
    if not at_chance(best_val_accuracy, num_classes):
        return False
    mlflow.set_tag(contract.TAG_AT_CHANCE, "true")
    print(f"warning: best val_accuracy {best_val_accuracy:.3f} never left chance (1/{num_classes} = {1 / num_classes:.3f}): "
          "the model learned nothing; try another learning rate, more epochs, or pretrained weights", flush=True)
    return True
