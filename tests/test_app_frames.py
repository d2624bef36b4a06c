"""Reshaping: long form, smoothing, groups over seeds, continued runs, summary, sensitivity."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from app.analysis import curve_data, frames
from app.data import run_search, store
from tests.app_fixtures import *  # noqa: F403
from tests.app_fixtures import EDGE_EXPERIMENT, load
from train import contract


@pytest.fixture(scope="module")
def lab(lab_store):
    _, runs, history = load(lab_store["uri"])
    return runs, history


def test_long_form_splits_train_and_validation(lab):
    runs, history = lab
    assert {"run_id", "run_name", "epoch", "metric", "split", "value"} <= set(history.columns)
    assert frames.split_metric(contract.VAL_LOSS) == (contract.LOSS, frames.VALIDATION)
    assert frames.split_metric(contract.LEARNING_RATE) == (contract.LEARNING_RATE, frames.TRAIN)
    accuracy = history[history["metric"] == contract.ACCURACY]
    assert set(accuracy["split"]) == {frames.TRAIN, frames.VALIDATION}
    assert frames.chart_metrics(history)[:3] == [contract.ACCURACY, contract.LOSS, contract.LEARNING_RATE]


def test_ema_is_tensorboards_debiased_average():
    values = pd.Series([1.0, 0.0, 1.0, np.nan, 0.0])
    weight = 0.6
    expected, last, count = [], 0.0, 0
    for value in values:
        if np.isnan(value):
            expected.append(np.nan)
            continue
        last, count = last * weight + (1 - weight) * value, count + 1
        expected.append(last / (1 - weight**count))
    np.testing.assert_allclose(frames.ema(values, weight), expected)
    pd.testing.assert_series_equal(frames.ema(values, 0.0), values)


def test_curves_color_by_lr_and_facet_by_stage(lab):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    curves = curve_data.curves(history, training, curve_data.CurveOptions(smoothing=0.5))
    points = curves.points
    assert set(points["facet"]) == set(contract.STAGES)
    assert set(points["color"]) == set(training["lr_label"])
    assert points["line"].nunique() == len(training)
    assert points["smoothed"].notna().all() and not np.allclose(points["smoothed"], points["value"])
    best = points[points["best"]]
    assert (best["split"] == frames.VALIDATION).all() and best["line"].nunique() == len(training)


def test_best_epoch_mark_is_at_the_logged_best_epoch(lab):
    runs, history = lab
    run = runs[(runs["stage"] == "full") & (runs["kind"] == contract.KIND_TRAIN)].iloc[0]
    curves = curve_data.curves(history, runs[runs["run_id"] == run["run_id"]], curve_data.CurveOptions())
    marked = curves.points[curves.points["best"]]
    assert marked["epoch"].tolist() == [run["metrics"][contract.BEST_EPOCH]]


def test_repeats_become_a_mean_line_with_a_band(lab):
    runs, history = lab
    full = runs[(runs["stage"] == "full") & (runs["schedule"] == "constant") & (runs["kind"] == contract.KIND_TRAIN)]
    curves = curve_data.curves(history, full, curve_data.CurveOptions(group=True, members=True))
    means = curves.points[curves.points["role"] == "mean"]
    assert means["line"].nunique() == full["lr_label"].nunique() == 3
    assert (means["n_runs"] == 2).all()
    one = means[(means["lr_label"] == "1e-4") & (means["split"] == frames.VALIDATION) & (means["epoch"] == 5)].iloc[0]
    members = history[history["run_id"].isin(full.loc[full["lr_label"] == "1e-4", "run_id"]) & (history["key"] == contract.VAL_ACCURACY) & (history["epoch"] == 5)]["value"]
    assert one["value"] == pytest.approx(members.mean())
    assert (one["low"], one["high"]) == pytest.approx((members.min(), members.max()))
    assert (curves.points["role"] == "member").any()
    assert set(curves.groups["n_runs"]) == {2}
    std = curve_data.curves(history, full, curve_data.CurveOptions(group=True, band=frames.STD)).points
    row = std[(std["lr_label"] == "1e-4") & (std["split"] == frames.VALIDATION) & (std["epoch"] == 5)].iloc[0]
    assert row["high"] - row["value"] == pytest.approx(members.std())


def test_finetune_continues_its_head_run_as_one_curve(lab):
    runs, history = lab
    finetune = runs[runs["stage"] == "finetune"].iloc[0]
    head = runs[runs["run_id"] == finetune["init_run_id"]].iloc[0]
    curves = curve_data.curves(history, runs[runs["run_id"] == finetune["run_id"]], curve_data.CurveOptions(join=True), all_runs=runs)
    points = curves.points[curves.points["split"] == frames.VALIDATION]
    head_epochs = int(history[history["run_id"] == head["run_id"]]["epoch"].max()) + 1
    assert set(points["facet"]) == {"head → finetune"}
    assert points["epoch"].min() == 0 and points["epoch"].max() == head_epochs + 10 - 1
    assert curves.boundaries["epoch"].tolist() == [head_epochs - 0.5]
    # The first part is coloured by the head run's rate, the second by the finetune run's.
    assert set(points.loc[points["epoch"] < head_epochs - 1, "lr_label"]) == {head["lr_label"]}
    assert set(points.loc[points["epoch"] >= head_epochs, "lr_label"]) == {finetune["lr_label"]}
    bridge = points[points["bridge"]]
    assert bridge["epoch"].tolist() == [head_epochs - 1] and bridge["lr_label"].tolist() == [finetune["lr_label"]]


def test_a_head_run_continued_by_a_selected_run_keeps_its_best_in_its_own_column(lab):
    """Joined, the head run is drawn in the head column with its best marked there, and as the first
    part of the joined curve, where only the fine-tuning run's best is marked."""
    runs, history = lab
    finetune = runs[runs["stage"] == "finetune"].iloc[0]
    both = runs[runs["run_id"].isin([finetune["run_id"], finetune["init_run_id"]])]
    points = curve_data.curves(history, both, curve_data.CurveOptions(join=True)).points
    best = points[points["best"]]
    assert sorted(best["facet"]) == ["head", "head → finetune"]
    assert best.set_index("facet").at["head", "run_id"] == finetune["init_run_id"]
    assert best.set_index("facet").at["head → finetune", "run_id"] == finetune["run_id"]


def test_summary_gap_is_measured_at_the_best_epoch(lab):
    runs, history = lab
    table = frames.summary(runs, history, now_ms=time.time() * 1000, stale_after_s=600, ui_base="http://ui")
    row = table[table["stage"] == "head"].iloc[0]
    values = history[(history["run_id"] == row["run_id"]) & (history["epoch"] == row["best_epoch"])].set_index("key")["value"]
    assert row["gap"] == pytest.approx(values[contract.ACCURACY] - values[contract.VAL_ACCURACY])
    last = history[(history["run_id"] == row["run_id"]) & (history["key"] == contract.VAL_LOSS)].sort_values("epoch")["value"].iloc[-1]
    assert row["final_val_loss"] == pytest.approx(last)
    assert row["epochs"] == 20 and row["duration_s"] > 0 and row["images_per_second"] > 0
    assert row["url"] == store.run_url("http://ui", runs.set_index("run_id").at[row["run_id"], "experiment_id"], row["run_id"])


def test_sensitivity_averages_repeats_per_group_with_interval_and_range(lab):
    runs, history = lab
    training = runs[runs["kind"] == contract.KIND_TRAIN]
    table = frames.summary(training, history, now_ms=time.time() * 1000, stale_after_s=600, ui_base="")
    sens = frames.sensitivity(table, training)
    head = sens[(sens["stage"] == "head") & (sens["measure"] == "best_val_accuracy")]
    assert sorted(head["lr"]) == [1e-4, 1e-3, 1e-2]
    assert (head["n_runs"] == 2).all() and set(head["n_label"]) == {"n=2"}
    expected = table[(table["stage"] == "head") & (table["lr"] == 1e-3)]["best_val_accuracy"]
    got = head[head["lr"] == 1e-3].iloc[0]
    assert (got["mean"], got["min"], got["max"]) == pytest.approx((expected.mean(), expected.min(), expected.max()))
    interval = scipy_stats.t.interval(0.95, 1, loc=expected.mean(), scale=scipy_stats.sem(expected))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(interval)
    # The schedule comparison (full, lr 1e-3, three schedules) is three lines, not one point averaged over schedules.
    full = sens[(sens["stage"] == "full") & (sens["lr"] == 1e-3) & (sens["measure"] == "best_val_accuracy")]
    assert full["line"].nunique() == 4 and sorted(full["n_runs"]) == [1, 1, 1, 2]
    assert "full · mobilenet_v2 · schedule cosine" in set(full["line"])


def test_lr_finder_pairs_loss_with_rate(lab):
    runs, history = lab
    finder = frames.lr_finder(runs[runs["kind"] == contract.KIND_LR_FIND], history)
    assert len(finder) == 60 and finder["lr"].is_monotonic_increasing
    assert finder["suggested_lr"].unique().tolist() == [3e-4]


def test_missing_validation_puts_best_marks_on_train(lab_store):
    _, runs, history = load(lab_store["uri"], EDGE_EXPERIMENT)
    no_val = runs[runs["run_id"] == lab_store["edge"]["no_val"]]
    points = curve_data.curves(history, no_val, curve_data.CurveOptions()).points
    assert set(points["split"]) == {frames.TRAIN}
    assert points["best"].sum() <= 1


def test_deleted_predecessor_is_reported_and_the_run_drawn_alone(lab_store):
    _, runs, history = load(lab_store["uri"], EDGE_EXPERIMENT)
    orphan = runs[runs["run_id"] == lab_store["edge"]["orphan"]]
    curves = curve_data.curves(history, orphan, curve_data.CurveOptions(join=True), all_runs=runs)
    assert curves.missing_predecessors == [lab_store["edge"]["deleted"]]
    assert curves.points["epoch"].min() == 0 and curves.boundaries.empty


def test_filters_and_their_options(lab):
    runs, _ = lab
    assert frames.filter_options(runs, "stage") == list(contract.STAGES)
    rates = frames.filter_options(runs, "lr")
    assert [float(r) for r in rates] == sorted(float(r) for r in rates)
    chosen = frames.apply_filters(runs, {"stage": ["head", "full"], "lr": ["1e-3"], "model": []})
    assert set(chosen["stage"]) == {"head", "full"} and set(chosen["lr_label"]) == {"1e-3"}


def test_stale_runs_are_running_runs_silent_for_too_long(lab_store):
    _, runs, history = load(lab_store["uri"], EDGE_EXPERIMENT)
    now = time.time() * 1000
    states = frames.run_states(runs, history, now, stale_after_s=600)
    assert states[lab_store["edge"]["stale"]] == "STALE"
    assert states[lab_store["edge"]["running"]] == "RUNNING"
    assert states[lab_store["edge"]["no_metrics"]] == "RUNNING"  # started a second ago: judged by its start time
    assert frames.run_states(runs, history, now + 3_600_000, stale_after_s=600)[lab_store["edge"]["no_metrics"]] == "STALE"


def test_one_spelling_of_a_rate_everywhere(lab):
    from app.analysis import numbers, stats

    assert [numbers.format_lr(v) for v in (1e-5, float("1e-05"), 0.00001, 3e-4, 2.5e-3, 0.1, 1.0)] == ["1e-5", "1e-5", "1e-5", "3e-4", "2.5e-3", "1e-1", "1e0"]
    assert numbers.format_lr(float("nan")) == numbers.format_lr(None) == ""
    assert stats.lr_text(1e-5) == run_search.format_lr(1e-5) == "1e-5"  # sentences, the run frame, the table: one function
    runs, _ = lab
    assert set(runs.loc[runs["kind"] == contract.KIND_TRAIN, "lr_label"]) == {"1e-2", "1e-3", "1e-4", "1e-5", "1e-6"}
