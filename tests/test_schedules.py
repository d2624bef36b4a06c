"""The schedule formulas, epoch by epoch (the logged values are checked in test_training)."""

import math

import pytest

from tests.conftest import tiny_config
from train.schedules import learning_rate_at


def rates(epochs=6, **overrides):
    config = tiny_config(epochs=epochs, lr=1e-3, **overrides)
    return [learning_rate_at(epoch, config) for epoch in range(epochs)]


def test_constant():
    assert rates() == [1e-3] * 6


@pytest.mark.parametrize("k", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_exponential(k):
    assert rates(schedule="exponential", decay=k) == pytest.approx([1e-3 * math.exp(-k * e) for e in range(6)])


def test_exponential_stops_after_decay_epochs():
    assert rates(schedule="exponential", decay=0.5, decay_epochs=2) == pytest.approx([1e-3 * math.exp(-0.5 * min(e, 2)) for e in range(6)])


def test_step_every_epochs_drop():
    assert rates(schedule="step", drop=0.5, epochs_drop=2) == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])


def test_step_at_milestones_like_the_lab():
    lab = rates(epochs=80, schedule="step", drop=0.1, milestones="40,60")
    assert lab[39] == pytest.approx(1e-3) and lab[40] == pytest.approx(1e-4)
    assert lab[59] == pytest.approx(1e-4) and lab[60] == pytest.approx(1e-5) and lab[79] == pytest.approx(1e-5)


def test_cosine_runs_from_lr_towards_zero():
    values = rates(epochs=5, schedule="cosine")
    assert values == pytest.approx([1e-3 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)])


def test_warmup_ramps_linearly_then_hands_over():
    values = rates(epochs=6, schedule="exponential", decay=0.5, warmup_epochs=2)
    assert values[:2] == pytest.approx([5e-4, 1e-3])
    assert values[2:] == pytest.approx([1e-3 * math.exp(-0.5 * e) for e in range(4)])


def test_warmup_then_milestones_counts_absolute_epochs():
    values = rates(epochs=8, schedule="step", drop=0.1, milestones="5", warmup_epochs=2)
    assert values == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4])
