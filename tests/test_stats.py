"""analysis/stats.py: hand-checked formulas, and calibration on simulated sweeps with known effects.

The simulations (analysis/calibration.py) are shaped like a real sweep: every run's ACC is the
configuration's true mean, plus an offset its seed shares with every configuration (model init, class
order), plus the run's own noise. A family is one panel of the paper grid: 2 inits x 4 growth criteria x
3 densities, 39 comparisons (3 init comparisons averaged over growth within each seed, 36 growth pairs),
adjusted with Holm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from analysis import calibration, stats

FAMILIES = 2000


def tolerance(rate: float, trials: int = FAMILIES) -> float:
    """4 standard errors of a simulated rate: a correct machine fails a check about once in 16,000 runs, and a
    wrong one (a z-interval, a missing correction) is still far outside."""
    return 4 * (rate * (1 - rate) / trials) ** 0.5


def test_holm_on_a_hand_checked_family() -> None:
    # sorted: 0.01 x 4 = 0.04; 0.03 x 3 = 0.09; 0.04 x 2 = 0.08 -> 0.09 (monotone); 0.5 x 1; NaN is not counted
    adjusted = stats.holm([0.01, 0.04, np.nan, 0.03, 0.5])
    np.testing.assert_allclose(adjusted, [0.04, 0.09, np.nan, 0.09, 0.5])
    assert stats.holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # capped at 1
    assert stats.holm([]).size == 0


def test_the_paired_test_is_scipys_paired_t_test() -> None:
    a, b = np.array([81.0, 79.5, 84.0, 80.0]), np.array([78.0, 79.0, 80.5, 77.0])
    test = stats.paired_test(a - b)
    expected = scipy.stats.ttest_rel(a, b)
    assert float(test.p_value) == pytest.approx(expected.pvalue)
    assert (float(test.ci_low), float(test.ci_high)) == pytest.approx(tuple(expected.confidence_interval(0.95)))
    assert float(test.diff) == pytest.approx(2.5) and float(test.sd) == pytest.approx(np.std(a - b, ddof=1))


@pytest.mark.parametrize(("differences", "p_value"), [([1.5, 1.5], 0.5), ([2.0, 2.0, 2.0, 2.0, 2.0], 2 / 32),
                                                      ([0.0, 0.0, 0.0], 1.0), ([0.2778, 0.2779, 0.2777], 0.25),
                                                      ([0.004, -0.004] * 4 + [0.004, -0.002], 1.0)])
def test_equal_differences_take_the_exact_sign_flip_p(differences: list[float], p_value: float) -> None:
    """No spread makes t infinite; equal up to the accuracy lattice (last case) is no spread either. Such a
    comparison gets no interval and no power statement: the t-test's do not apply."""
    test = stats.paired_test(differences)
    assert float(test.p_value) == pytest.approx(p_value)
    assert float(test.diff) == pytest.approx(np.mean(differences)) and float(test.sd) == 0.0
    assert np.isnan(test.ci_low) and np.isnan(test.ci_high)  # no spread, no t-interval
    assert np.isnan(stats.mde(0.0, len(differences))) and stats.seeds_needed(1.0, 0.0) is None


def test_the_leader_is_named_first_with_its_own_interval() -> None:
    a, b = pd.Series([78.0, 79.0, 77.5], index=[0, 1, 2]), pd.Series([80.0, 82.0, 80.5], index=[0, 1, 2])
    row = stats.leader_first("a", a, "b", b)
    assert (row["a"], row["b"], row["diff"]) == ("b", "a", pytest.approx(8 / 3))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        tuple(scipy.stats.ttest_rel(b, a).confidence_interval(0.95)))


def test_the_minimum_detectable_difference_is_at_holms_strictest_level() -> None:
    rows = pd.DataFrame([stats.compare(pd.Series(d, index=range(4)), pd.Series(0.0, index=range(4)))
                         for d in ([1.0, 2.0, 3.0, 2.5], [0.5, -0.5, 1.0, 0.0], [3.0, 3.5, 2.0, 4.0])])
    family = stats.family(rows)
    for row in family.itertuples():
        assert row.mde == pytest.approx(stats.mde(row.sd, 4, stats.ALPHA / 3))


def test_one_pair_is_no_test_and_missing_pairs_are_dropped_and_counted() -> None:
    one = stats.compare(pd.Series([80.0], index=[0]), pd.Series([78.0], index=[0]))
    assert one["n_pairs"] == 1 and one["diff"] == 2.0 and np.isnan(one["p_value"]) and np.isnan(one["ci_low"])
    rows = stats.family(pd.DataFrame([{"a": "x", "b": "y", **one}]))
    assert rows["verdict"].tolist() == [stats.NO_TEST] and np.isnan(rows["p_adjusted"].iloc[0])
    # seed 2 only on one side, seed 3 only on the other: 2 pairs used, 2 runs left out
    gapped = stats.compare(pd.Series([80.0, 82.0, 90.0], index=[0, 1, 2]),
                           pd.Series([79.0, 80.0, 50.0], index=[0, 1, 3]))
    assert (gapped["n_pairs"], gapped["n_unmatched"], gapped["diff"]) == (2, 2, 1.5)


def test_a_claim_averaged_over_a_factor_counts_seeds_not_runs() -> None:
    index = pd.MultiIndex.from_product([[0, 1, 2], ["random", "momentum"]], names=["seed", "growth"])
    erk = pd.Series([80.0, 82.0, 81.0, 85.0, 79.0, 80.0], index=index)
    uniform = pd.Series([78.0, 79.0, 80.0, 81.0, 77.0, 79.0], index=index).drop((2, "momentum"))
    row = stats.compare(erk, uniform)
    # seed 0: (2 + 3) / 2; seed 1: (1 + 4) / 2; seed 2: random only, 2
    assert (row["n_pairs"], row["n_run_pairs"], row["n_unmatched"]) == (3, 5, 1)
    assert row["p_value"] == pytest.approx(scipy.stats.ttest_1samp([2.5, 2.5, 2.0], 0.0).pvalue)


@pytest.mark.parametrize("seeds", [2, 3, 5, 10])
def test_power_and_the_minimum_detectable_difference_agree(seeds: int) -> None:
    for alpha in (stats.ALPHA, stats.ALPHA / 39):
        mde = stats.mde(2.0, seeds, alpha)
        assert float(stats.power(mde, 2.0, seeds, alpha)) == pytest.approx(stats.POWER, abs=1e-6)
    assert stats.power(0.0, 1.0, seeds, 0.05) == pytest.approx(0.05)  # no effect: the test's own level
    assert stats.mde(1.0, seeds, 0.05) > stats.mde(1.0, seeds + 1, 0.05)  # more seeds, smaller differences
    needed = stats.seeds_needed(1.0, 2.0, stats.ALPHA / 39)
    assert stats.power(1.0, 2.0, needed, stats.ALPHA / 39) >= 0.8 > stats.power(1.0, 2.0, needed - 1, stats.ALPHA / 39)
    assert np.isnan(stats.mde(1.0, 1)) and stats.seeds_needed(1.0, float("nan")) is None


@pytest.mark.parametrize("seeds", [2, 3, 5, 10])
def test_null_sweeps_call_something_real_in_at_most_5_percent_of_families(seeds: int) -> None:
    """Every configuration equal, seed offsets shared: the familywise false-`real` rate of Holm."""
    rng = np.random.default_rng(seeds)
    test = stats.paired_test(calibration.differences(calibration.simulate(rng, FAMILIES, seeds, "gaussian", 0.0)))
    false_real = calibration.holm_real(test.p_value).any(axis=1).mean()
    assert false_real <= stats.ALPHA + tolerance(stats.ALPHA), false_real
    # and per comparison, before the correction, the t-test holds its level
    assert abs((test.p_value < stats.ALPHA).mean() - stats.ALPHA) < 0.01


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_a_2_sigma_effect_is_found_at_the_power_the_mde_column_predicts(seeds: int) -> None:
    """A true ERK effect of 2 sd of its paired difference at one density; the other 38 comparisons null."""
    rng = np.random.default_rng(100 + seeds)
    sd = calibration.SIGMA * (2 / 4) ** 0.5  # ERK - uniform averaged over 4 growth criteria
    effect = calibration.simulate(rng, FAMILIES, seeds, "gaussian", 2 * sd)
    test = stats.paired_test(calibration.differences(effect))
    found = calibration.holm_real(test.p_value)[:, 0].mean()
    # the mde column is at Holm's strictest level alpha / m; Holm's later steps can only help
    predicted = float(stats.power(2 * sd, sd, seeds, stats.ALPHA / 39))
    assert predicted - tolerance(predicted) <= found <= predicted + tolerance(predicted) + 0.02, (found, predicted)


@pytest.mark.parametrize("seeds", [2, 3, 5, 10])
def test_the_interval_covers_the_true_difference_95_percent_of_the_time(seeds: int) -> None:
    comparisons = 20_000
    test = stats.paired_test(np.random.default_rng(200 + seeds).normal(2.0, 1.0, size=(comparisons, seeds)))
    covered = ((test.ci_low <= 2.0) & (2.0 <= test.ci_high)).mean()
    assert abs(covered - stats.CONFIDENCE) <= tolerance(stats.CONFIDENCE, comparisons), covered


def test_pairing_counts_seeds_where_a_seeds_luck_is_shared_across_the_averaged_factor() -> None:
    """ERK's first mask draw is shared by a seed's growth criteria: a seed x init effect. Averaging within the
    seed keeps the test's level; counting each (seed, growth) run pair as independent does not."""
    rng = np.random.default_rng(11)
    seeds, families = 5, 1000
    index = pd.MultiIndex.from_product([range(seeds), ["random", "unfired", "momentum", "gradient"]])
    ours, per_run = [], []
    for _ in range(families):
        luck = np.repeat(rng.normal(0.0, 1.0, size=seeds), 4)  # the seed's mask draw, shared by its 4 criteria
        erk = pd.Series(luck + rng.normal(0.0, 0.5, size=4 * seeds), index=index)
        uniform = pd.Series(rng.normal(0.0, 0.5, size=4 * seeds), index=index)
        ours.append(stats.compare(erk, uniform)["p_value"])
        per_run.append(scipy.stats.ttest_1samp(erk - uniform, 0.0).pvalue)
    assert np.mean(np.array(ours) < stats.ALPHA) <= stats.ALPHA + tolerance(stats.ALPHA, families)
    assert np.mean(np.array(per_run) < stats.ALPHA) > 0.2  # about 4 times the promised 5%
