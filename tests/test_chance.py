"""Chance level: said before a run that cannot learn, and tagged on a run that did not."""

from __future__ import annotations

import mlflow
import pytest

from tests.conftest import tiny_config
from train import contract
from train.run import chance


@pytest.mark.parametrize(("stage", "weights", "warned"), [("head", "none", True), ("full", "none", True), ("scratch", "none", False), ("head", "imagenet", False)])
def test_a_transfer_stage_without_weights_is_said_before_the_first_epoch(stage, weights, warned):
    line = chance.random_base_warning(tiny_config(stage=stage, weights=weights))
    assert (line is not None) == warned
    if warned:
        assert line.startswith(f"warning: stage={stage} with weights=none trains on a random") and "\n" not in line


def test_a_run_that_never_left_chance_is_tagged_and_said(tracking_uri, capsys):
    mlflow.set_experiment("chance")  # this store's own: another module's fixture may have made another one active
    with mlflow.start_run() as at_chance:
        assert chance.note_if_at_chance(0.18, 6)  # 1/6 = 0.167, within the tolerance
    with mlflow.start_run() as learned:
        assert not chance.note_if_at_chance(0.40, 6)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["warning: best val_accuracy 0.180 never left chance (1/6 = 0.167): the model learned nothing; "
                     "try another learning rate, more epochs, or pretrained weights"]
    client = mlflow.MlflowClient()
    assert client.get_run(at_chance.info.run_id).data.tags[contract.TAG_AT_CHANCE] == "true"
    assert contract.TAG_AT_CHANCE not in client.get_run(learned.info.run_id).data.tags
