"""The statistics of comparisons against scipy's own results: Student-t intervals of a mean, Welch
intervals of a difference, the seeds-needed approximation, groups and verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from app.analysis import stats

SAMPLES = [
    ([0.80, 0.81, 0.79], [0.70, 0.71, 0.69]),
    ([0.802, 0.777, 0.83, 0.81, 0.795], [0.79, 0.62, 0.85]),  # unequal sizes and spreads
    ([1.0, 2.0], [1.5, 1.6, 1.4, 1.55, 1.45, 1.5]),
]


@pytest.mark.parametrize("values", [s[0] for s in SAMPLES] + [s[1] for s in SAMPLES])
def test_interval_of_the_mean_is_scipys_student_t(values):
    got = stats.describe(values)
    expected = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert (got.n, got.mean, got.std) == (len(values), pytest.approx(np.mean(values)), pytest.approx(np.std(values, ddof=1)))
    assert (got.ci_low, got.ci_high) == pytest.approx(expected)


def test_three_seeds_give_the_t_interval_not_the_z_one():
    got = stats.describe([0.0, 1.0, 2.0])  # s = 1, s/√3
    assert got.ci_high - got.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2), not z = 1.96


def test_an_accuracy_interval_is_cut_at_its_bounds_and_the_verdicts_stay_as_they_were():
    """Two seeds near 1: the t interval reaches past 1 (an accuracy cannot); the page reads it cut at 1.
    Only the group's own interval is cut: differences and verdicts come from the unchanged spread."""
    values = [0.96, 0.99]
    raw, cut = stats.describe(values), stats.describe(values, bounds=stats.ACCURACY_BOUNDS)
    assert raw.ci_high > 1 and cut.ci_high == 1.0 and cut.ci_low == raw.ci_low and (cut.n, cut.mean, cut.std) == (raw.n, raw.mean, raw.std)
    runs = pd.DataFrame({"run_id": list("abcd"), "run_name": list("abcd"), "stage": "full", "model": "mobilenet_v2",
                         "params": [{"lr": "0.001", "seed": "1"}, {"lr": "0.001", "seed": "2"}, {"lr": "0.01", "seed": "1"}, {"lr": "0.01", "seed": "2"}],
                         "value": [0.96, 0.99, 0.70, 0.72], "test_accuracy": math.nan})  # fmt: skip
    table = stats.compare(runs).table
    assert (table["ci_high"] <= 1.0).all() and (table["ci_low"] >= 0.0).all()
    assert list(table["verdict"]) == [stats.BEST, stats.WORSE]


@pytest.mark.parametrize(("a", "b"), SAMPLES)
def test_difference_interval_is_scipys_welch(a, b):
    got = stats.welch(stats.describe(a), stats.describe(b))
    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(0.95)
    assert got.value == pytest.approx(np.mean(a) - np.mean(b))
    assert (got.low, got.high) == pytest.approx((interval.low, interval.high))
    assert got.df == pytest.approx(result.df)
    # The interval excludes 0 exactly when Welch's test rejects at 5%.
    assert (got.low > 0 or got.high < 0) == (result.pvalue < 0.05)


def test_one_run_has_no_interval_and_no_difference_interval():
    one = stats.describe([0.8])
    assert one.n == 1 and one.mean == 0.8 and math.isnan(one.std) and math.isnan(one.ci_low)
    difference = stats.welch(one, stats.describe([0.7, 0.71]))
    assert difference.value == pytest.approx(0.095) and math.isnan(difference.low) and math.isnan(difference.high)
    assert math.isnan(stats.seeds_needed(0.09, one, stats.describe([0.7, 0.71])))


def test_identical_repeats_give_a_point_interval():
    difference = stats.welch(stats.describe([0.8, 0.8]), stats.describe([0.7, 0.7, 0.7]))
    assert (difference.low, difference.high) == pytest.approx((0.1, 0.1))


@pytest.mark.parametrize(("difference", "a", "b"), [(0.01, [0.80, 0.81, 0.79], [0.79, 0.80, 0.78]), (0.05, [0.8, 0.7, 0.9], [0.75, 0.7, 0.8, 0.72]), (0.3, [1.0, 2.0], [1.5, 1.6])])
def test_seeds_needed_reach_the_power_under_the_normal_approximation(difference, a, b):
    """n seeds per group give a z-test of the observed spread ≥ 80% power at this difference; n − 1 do not."""
    sa, sb = stats.describe(a), stats.describe(b)
    n = stats.seeds_needed(difference, sa, sb)
    sigma2 = (sa.std**2 + sb.std**2) / 2

    def power(seeds):
        return scipy_stats.norm.cdf(difference / math.sqrt(2 * sigma2 / seeds) - scipy_stats.norm.ppf(0.975))

    assert power(n) >= 0.8
    assert n == 2 or power(n - 1) < 0.8


def test_equal_means_need_infinitely_many_seeds():
    assert math.isinf(stats.seeds_needed(0.0, stats.describe([0.8, 0.9]), stats.describe([0.8, 0.9])))


def runs(*groups, stage="head", model="mobilenet_v2", extra=None) -> list[dict]:
    """Rows of `values_of`'s shape: each group is (lr, [values]); the seed and the device differ per run."""
    rows = []
    for lr, values in groups:
        for seed, value in enumerate(values):
            params = {"lr": f"{lr:g}", "stage": stage, "model": model, "seed": str(seed), "device": f"GPU {seed}", "run_name": f"r{seed}", **(extra or {})}
            rows.append({"run_id": f"{stage}-{lr:g}-{seed}-{model}", "run_name": f"{stage} lr={lr:g}", "stage": stage, "model": model,
                         "status": "FINISHED", "pruned": False, "params": params, "value": value})  # fmt: skip
    return rows


def test_verdicts_per_stage_and_the_sentences():
    values = pd.DataFrame(
        runs((1e-3, [0.80, 0.81, 0.79]), (1e-4, [0.70, 0.71, 0.69]), (1e-6, [0.79, 0.80, 0.81, 0.78]))
        + runs((1e-3, [0.9]), (1e-4, [0.8]), stage="full")
    )
    comparison = stats.compare(values)
    table = comparison.table
    verdict = {(row.stage, row.lr): row.verdict for row in table.itertuples()}
    assert verdict == {("head", 1e-3): "best", ("head", 1e-4): "worse", ("head", 1e-6): "within_noise", ("full", 1e-3): "best", ("full", 1e-4): "cannot_tell"}
    assert list(table["stage"]) == ["full", "full", "head", "head", "head"]  # the contract's stage order, best first
    assert set(table["n"]) == {1, 3, 4}  # the device and run_name differ per run, the runs still group
    worse = table[(table["stage"] == "head") & (table["lr"] == 1e-4)].iloc[0]
    expected = scipy_stats.ttest_ind([0.80, 0.81, 0.79], [0.70, 0.71, 0.69], equal_var=False).confidence_interval(0.95)
    assert (worse["difference"], worse["difference_low"], worse["difference_high"]) == pytest.approx((0.1, expected.low, expected.high))
    said = stats.sentences(comparison)
    assert said[0].startswith("full: one run each: cannot tell; add `-P repeats=3` to the sweep")
    assert said[1].startswith("head: lr 1e-3 is best, 0.800 [0.775, 0.825] over 3 seeds; lr 1e-6 is undecided, within noise of it: 0.005 [-0.017, 0.027] (~")
    assert "lr 1e-4 is worse by 0.100 [0.077, 0.123]" in said[1]
    assert stats.runner_up_note(comparison)[1].startswith("head: the winner (lr 1e-3) is within noise of the runner-up (lr 1e-6)")


def test_single_runs_share_one_cannot_tell_clause():
    values = pd.DataFrame(runs((1e-3, [0.80, 0.81, 0.79]), (1e-4, [0.5]), (1e-5, [0.4])) + runs((1e-3, [0.9]), (1e-4, [0.70, 0.71]), stage="full"))
    full, head = stats.sentences(stats.compare(values))  # the contract's stage order
    assert head.endswith("; lr 1e-4 / lr 1e-5: cannot tell (one run each; add `-P repeats=3` to the sweep)")
    assert full == "full: lr 1e-3 is best, 0.900 (one run); lr 1e-4: cannot tell (the best is one run; add `-P repeats=3` to the sweep)"


def test_lowest_loss_is_best_and_the_difference_counts_how_much_higher():
    values = pd.DataFrame(runs((1e-3, [0.50, 0.52, 0.51]), (1e-4, [0.80, 0.82, 0.81])))
    table = stats.compare(values, stats.LOWEST_VAL_LOSS).table
    assert list(table["verdict"]) == ["best", "worse"] and table["lr"].iloc[0] == 1e-3
    assert table["difference"].iloc[1] == pytest.approx(0.30) and table["difference_low"].iloc[1] > 0


def test_other_params_that_vary_are_columns_and_name_the_groups():
    values = pd.DataFrame(runs((1e-3, [0.8, 0.82]), extra={"schedule": "constant"}) + runs((1e-3, [0.7, 0.72]), extra={"schedule": "cosine"}))
    comparison = stats.compare(values)
    assert comparison.params == ["schedule"]
    assert list(comparison.table.columns[:4]) == ["stage", "model", "lr", "schedule"]
    assert list(comparison.table["group"]) == ["schedule constant", "schedule cosine"]


def test_several_models_are_ranked_apart():
    values = pd.DataFrame(runs((1e-3, [0.8, 0.82])) + runs((1e-3, [0.6, 0.62]), model="efficientnet_b0"))
    comparison = stats.compare(values)
    assert list(comparison.table["verdict"]) == ["best", "best"]
    assert [s.split(":")[0] for s in stats.sentences(comparison)] == ["head · mobilenet_v2", "head · efficientnet_b0"]


def test_nan_missing_unfinished_and_pruned_runs_are_left_out_with_notes():
    rows = runs((1e-3, [0.8, 0.82, math.nan]), (1e-2, [math.nan, math.nan]), (1e-4, [0.5, 0.52]))
    rows[-1]["status"] = "RUNNING"
    rows[-2]["pruned"] = True
    comparison = stats.compare(pd.DataFrame(rows))
    assert list(comparison.table["lr"]) == [1e-3] and comparison.table["n"].iloc[0] == 2
    assert len(comparison.notes) == 3
    assert "1 run(s) not FINISHED" in comparison.notes[0] and "1 run(s) stopped early" in comparison.notes[1]
    assert "3 finished run(s) have no best validation accuracy" in comparison.notes[2]
    nothing = stats.compare(pd.DataFrame(runs((1e-2, [math.nan]))))
    assert nothing.table.empty and stats.sentences(nothing) == [] and nothing.notes


def test_group_keys_ignore_repeats_bookkeeping_and_what_is_no_setting():
    params = pd.Series([
        {"lr": "0.001", "seed": "1", "device": "CPU", "experiment": "a", "run_name": "x", "resume": "", "train_images": "288"},
        {"lr": "1e-3", "seed": "2", "device": "GPU 0 (H200)", "experiment": "b", "run_name": "y", "train_images": "288"},
        {"lr": "0.001", "seed": "3", "device": "CPU", "train_images": "300"},  # the folder changed: a note, not a group
        {"lr": "0.0001", "seed": "1", "device": "CPU", "train_images": "288"},
    ])  # fmt: skip
    keys = stats.group_keys(params)
    assert keys[0] == keys[1] == keys[2] and keys.nunique() == 2
    assert stats.group_keys(params, vary=("seed", "lr")).nunique() == 1
    rows = [{"run_id": str(i), "run_name": f"r{i}", "stage": "", "model": "", "status": "FINISHED", "pruned": False, "params": p, "value": 0.8 + i / 100}
            for i, p in enumerate(params)]  # fmt: skip
    notes = stats.compare(pd.DataFrame(rows)).notes
    assert len(notes) == 1 and "different train_images (288, 300): the data changed between them" in notes[0]


def test_learning_rates_read_as_powers_of_ten():
    assert [stats.lr_text(v) for v in (1e-3, 3e-3, 2.5e-4, 1e-9, 0.1)] == ["1e-3", "3e-3", "2.5e-4", "1e-9", "1e-1"]


def two_groups(best: list[float], other: list[float], margin: float = stats.DEFAULT_MARGIN) -> pd.Series:
    """The contender's row of a stage with two groups (lr 1e-3 holds `best`, lr 1e-4 `other`)."""
    table = stats.compare(pd.DataFrame(runs((1e-3, best), (1e-4, other))), margin=margin).table
    return table.iloc[1]


def test_equivalent_when_the_interval_lies_inside_the_margin_and_not_a_hair_beyond():
    best, other = [0.800, 0.802, 0.798, 0.801, 0.799], [0.798, 0.800, 0.796, 0.799, 0.797]  # 0.002 apart, tight
    row = two_groups(best, other)
    assert row["verdict"] == "equivalent" and -0.01 < row["difference_low"] and row["difference_high"] < 0.01
    inside, just_beyond = row["difference_high"] + 1e-4, row["difference_high"] - 1e-4
    assert two_groups(best, other, margin=inside)["verdict"] == "equivalent"
    assert two_groups(best, other, margin=just_beyond)["verdict"] == "within_noise"  # the interval holds 0: undecided
    assert two_groups(best, other, margin=0.0)["verdict"] == "within_noise"


def test_a_real_but_tiny_difference_is_equivalent_a_large_one_worse():
    """62 seeds a side, 0.001 apart: the interval excludes 0 yet lies inside ±0.01, which is the answer users need."""
    rng = np.random.default_rng(0)
    best = list(0.850 + rng.normal(0, 0.0005, 62))
    other = list(0.849 + rng.normal(0, 0.0005, 62))
    row = two_groups(best, other)
    assert row["difference_low"] > 0 and row["verdict"] == "equivalent"
    assert two_groups(best, other, margin=0.0005)["verdict"] == "worse"  # beyond a smaller margin it is worse
    far = two_groups([0.80, 0.81, 0.79], [0.70, 0.71, 0.69])
    assert far["verdict"] == "worse"


def test_seeds_needed_decide_either_way():
    a, b = stats.describe([0.80, 0.82, 0.78]), stats.describe([0.80, 0.83, 0.77])
    assert math.isinf(stats.seeds_needed(0.0, a, b))  # no margin: equal means are never told apart
    to_equivalence = stats.seeds_needed(0.0, a, b, margin=0.01)  # with one: enough seeds show they are equivalent
    assert math.isfinite(to_equivalence) and to_equivalence > 3
    assert stats.seeds_needed(0.002, a, b, margin=0.01) > to_equivalence  # less room to the margin: more seeds


def test_infinite_values_never_rank_and_are_noted():
    """MLflow's SQL stores keep ±inf as ±1.7976931348623157e308: neither may be a best group."""
    rows = runs((1e-3, [0.80, 0.81]), (1e-2, [math.inf, 1.7976931348623157e308]), (1e-1, [-1.7976931348623157e308]))
    comparison = stats.compare(pd.DataFrame(rows))
    assert list(comparison.table["lr"]) == [1e-3]
    assert comparison.notes == ["3 finished run(s) have an infinite best validation accuracy (a diverged run) and are left out of the comparison."]
    assert all("e+308" not in s and len(s) < 200 for s in stats.sentences(comparison))


def test_params_a_stage_ignores_neither_split_nor_name_groups():
    constant = runs((1e-3, [0.80, 0.81]), extra={"schedule": "constant", "decay": "0.5"}) + runs((1e-3, [0.82, 0.83]), extra={"schedule": "constant", "decay": "0.1"})
    exponential = runs((1e-3, [0.70, 0.71]), extra={"schedule": "exponential", "decay": "0.1"})
    for row in exponential:
        row["run_id"] += "-exp"
    comparison = stats.compare(pd.DataFrame(constant + exponential))
    assert list(comparison.table["group"]) == ["schedule constant", "schedule exponential"]
    assert list(comparison.table["n"]) == [4, 2] and comparison.params == ["schedule"]


def test_the_answer_across_stages_and_its_headline():
    values = pd.DataFrame(
        runs((1e-6, [0.850, 0.852, 0.848]), (1e-7, [0.80, 0.81, 0.79]), stage="finetune")
        + runs((1e-4, [0.848, 0.850, 0.846, 0.849]), stage="full")
        + runs((1e-3, [0.75, 0.76, 0.74]), stage="head")
        + runs((1e-3, [0.6]), stage="scratch")
    )
    values["test_accuracy"] = np.where(values["run_id"] == "finetune-1e-06-0-mobilenet_v2", 0.842, math.nan)
    across = stats.stages(stats.compare(values))
    assert list(across.columns[:13]) == ["stage", "model", "group", "lr", "n", "mean", "ci_low", "ci_high", "verdict", "difference", "difference_low", "difference_high", "test_accuracy"]
    assert across.set_index("stage")["verdict"].to_dict() == {"finetune": "best", "full": "equivalent", "head": "worse", "scratch": "cannot_tell"}
    best = across.iloc[0]
    assert (best["group"], best["n"], best["test_accuracy"]) == ("lr 1e-6", 3, pytest.approx(0.842))
    head = across.set_index("stage").loc["head"]
    expected = scipy_stats.ttest_ind([0.850, 0.852, 0.848], [0.75, 0.76, 0.74], equal_var=False).confidence_interval(0.95)
    assert (head["difference"], head["difference_low"], head["difference_high"]) == pytest.approx((0.1, expected.low, expected.high))
    said = stats.headline(across)
    assert said[0].startswith("finetune lr 1e-6 wins overall, 0.850 [0.845, 0.855] over 3 seeds, test accuracy 0.842; full is equivalent: 0.002 [")
    assert "; head is worse by 0.100 [" in said[0] and "; scratch: cannot tell (one run;" in said[0]
    assert len(said) == 2 and said[1] == stats.SELECTION_LIMITS and "each stage's best was itself picked" in said[1]


def test_undecided_pairs_name_both_sides_for_racing():
    values = pd.DataFrame(runs((1e-3, [0.80, 0.81, 0.79]), (1e-4, [0.70, 0.71, 0.69]), (1e-5, [0.79, 0.80, 0.81, 0.78]), (1e-6, [0.5])))
    pairs = stats.undecided_pairs(stats.compare(values))
    assert [(p.verdict, p.contender.label, p.contender.n) for p in pairs] == [("within_noise", "lr 1e-5", 4), ("cannot_tell", "lr 1e-6", 1)]
    best = pairs[0].best
    assert (best.label, best.n, best.configuration["lr"], len(best.run_ids)) == ("lr 1e-3", 3, 1e-3, 3)
    assert "seed" not in best.configuration and best.key == stats.group_keys(pd.Series([values["params"][0]]))[0]
    assert math.isfinite(pairs[0].seeds_needed) and math.isnan(pairs[1].seeds_needed)
