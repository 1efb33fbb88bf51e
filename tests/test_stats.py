"""analysis/stats.py and analysis/claims.py: hand-checked formulas, and calibration on simulated splits with
known effects.

The simulations (analysis/calibration.py) are shaped like a real sweep: every run's ACC is the configuration's
true mean, plus an offset its seed shares with every configuration (model init, class order), plus the run's own
noise, under seven noise models (unequal variances, a shared mask draw, accuracy lattices). A family is one split
of the paper grid, decided as the report decides it: the init main effect and 6 growth main effects, with the 3
init cells (densities) and the 36 growth cells gated below their main effects.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from analysis import calibration, claims, stats
from analysis.data import accuracy_step

FAMILIES = 1500


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


@pytest.mark.parametrize(("differences", "step", "p_value"), [
    ([1.5, 1.5], 0.0, 0.5), ([2.0, 2.0, 2.0, 2.0, 2.0], 0.0, 2 / 32), ([0.0, 0.0, 0.0], 0.0, 1.0),
    ([0.2778, 0.2779, 0.2777], 0.0, 0.25),
    # two images of 72 or 73 per task (5 tasks): a spread of 0.012 points is the lattice, not the seeds
    ([0.571, 0.552, 0.548], 100 / (5 * 73), 0.25), ([0.556, 0.556, 0.556], 100 / (5 * 73), 0.25)])
def test_a_spread_below_one_test_image_is_a_tie_of_counts(differences: list[float], step: float,
                                                           p_value: float) -> None:
    """No spread makes t infinite, and a spread below the accuracy lattice's step makes it arbitrarily large: both
    take the exact sign-flip p, so nearly equal and exactly equal differences get the same verdict. No interval and
    no power statement: the t-test's do not apply."""
    test = stats.paired_test(differences, step)
    assert float(test.p_value) == pytest.approx(p_value) and bool(test.tie)
    assert float(test.diff) == pytest.approx(np.mean(differences))
    assert np.isnan(test.ci_low) and np.isnan(test.ci_high)
    assert float(stats.paired_test(differences).p_value) < 0.01 or float(test.sd) < stats.RESOLUTION  # without the step
    assert np.isnan(stats.mde(0.0, len(differences))) and stats.seeds_needed(1.0, 0.0) is None


def test_the_accuracy_step_is_one_image_of_the_largest_task() -> None:
    """Final accuracies 35/36, 23/24 (task 0: lcm 72 images) and 1, 70/73 (task 1: 73): one image of 73 over 2 tasks."""
    matrices = [[[50.0], [100 * 35 / 36, 100.0]], [[100 * 23 / 24, 100 * 70 / 73]], None]
    assert accuracy_step(matrices) == pytest.approx(100 / (2 * 73))
    assert accuracy_step([[[100 / 3]]]) == pytest.approx(100 / 3)
    assert accuracy_step([[[100 * 2 ** 0.5 / 2]]]) == 0.0  # no count of images: unknown
    assert accuracy_step([]) == 0.0


def test_graphical_with_equal_weights_is_holm() -> None:
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 9):
        for _ in range(50):
            p = rng.uniform(0, 0.1, m)
            p[rng.uniform(size=m) < 0.2] = np.nan
            np.testing.assert_allclose(stats.graphical(p, *stats.holm_graph(m)), stats.holm(p), equal_nan=True)


def test_a_gated_claim_gets_only_the_weight_its_rejected_parent_passes() -> None:
    """Two primaries (weight 1/2 each) and two cells of the second, which passes a quarter of its weight to them.
    By hand: 0.01 / 0.5 = 0.02 first; primary 0 then holds 1/2 + 3/8 (0.03 / 0.875) and each cell 1/16; primary 0's
    weight reaches the cells through the rerouted edges, 1/2 each (0.02 / 0.5 = 0.04); the last cell holds 1."""
    weights, transitions = claims.split_graph([claims.INIT, claims.GROWTH, claims.GROWTH_CELL, claims.GROWTH_CELL],
                                              [-1, -1, 1, 1])
    np.testing.assert_allclose(weights, [0.5, 0.5, 0, 0])
    eps = claims.EPSILON  # each cell passes this back to the other primary claim
    np.testing.assert_allclose(transitions, [[0, 1, 0, 0], [0.75, 0, 0.125, 0.125], [eps, 0, 0, 1 - eps],
                                             [eps, 0, 1 - eps, 0]])
    adjusted = stats.graphical([0.03, 0.01, 0.02, 0.2], weights, transitions)
    np.testing.assert_allclose(adjusted, [0.03 / 0.875, 0.02, 0.04, 0.2], rtol=1e-5)
    shut = stats.graphical([0.03, 0.9, 0.001, 0.001], weights, transitions)  # the parent is not rejected
    assert shut[0] == pytest.approx(0.06) and (shut[2:] >= 0.9).all()
    np.testing.assert_allclose(stats.graphical([0.03, 0.01, 0.02, 0.2], weights, transitions, until=0.05)[:2],
                               [0.03 / 0.875, 0.02])


def test_the_init_main_effect_passes_all_its_weight_to_its_densities() -> None:
    """Init's cells are the paper's per-density reading: a real init main effect passes them all of its weight,
    split equally (0.02 / 0.5 = 0.04 first; each density then holds 1/4: 0.01 / 0.25 = 0.04, 0.02 / 0.5 = 0.04);
    once both densities are rejected, their weight flows back to the growth claim (0.6 / 1)."""
    weights, transitions = claims.split_graph([claims.INIT, claims.INIT_CELL, claims.INIT_CELL, claims.GROWTH],
                                              [-1, 0, 0, -1])
    np.testing.assert_allclose(weights, [0.5, 0, 0, 0.5])
    eps = claims.EPSILON
    np.testing.assert_allclose(transitions, [[0, 0.5, 0.5, 0], [0, 0, 1 - eps, eps], [0, 1 - eps, 0, eps],
                                             [1, 0, 0, 0]])
    np.testing.assert_allclose(stats.graphical([0.02, 0.01, 0.02, 0.6], weights, transitions), [0.04, 0.04, 0.04, 0.6],
                               rtol=1e-5)


def test_the_leader_is_named_first_with_its_own_interval() -> None:
    a, b = pd.Series([78.0, 79.0, 77.5], index=[0, 1, 2]), pd.Series([80.0, 82.0, 80.5], index=[0, 1, 2])
    row = stats.leader_first("a", a, "b", b)
    assert (row["a"], row["b"], row["diff"]) == ("b", "a", pytest.approx(8 / 3))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        tuple(scipy.stats.ttest_rel(b, a).confidence_interval(0.95)))


def test_the_minimum_detectable_difference_is_at_the_level_a_claim_is_first_tested() -> None:
    rows = pd.DataFrame([stats.compare(pd.Series(d, index=range(4)), pd.Series(0.0, index=range(4)))
                         for d in ([1.0, 2.0, 3.0, 2.5], [0.5, -0.5, 1.0, 0.0], [3.0, 3.5, 2.0, 4.0])])
    family = stats.family(rows, "three")  # Holm: alpha / 3 each
    assert set(family["family"]) == {"three"} and set(family["family_size"]) == {3}
    for row in family.itertuples():
        assert row.mde == pytest.approx(stats.mde(row.sd, 4, stats.ALPHA / 3))
    gated = stats.family(rows, "gated", *claims.split_graph([claims.GROWTH, claims.GROWTH_CELL, claims.GROWTH_CELL],
                                                            [-1, 0, 0]))
    assert gated["level"].tolist() == pytest.approx([stats.ALPHA, stats.ALPHA / 2, stats.ALPHA / 2])


def test_one_pair_is_no_test_and_missing_pairs_are_dropped_and_counted() -> None:
    one = stats.compare(pd.Series([80.0], index=[0]), pd.Series([78.0], index=[0]))
    assert one["n_pairs"] == 1 and one["diff"] == 2.0 and np.isnan(one["p_value"]) and np.isnan(one["ci_low"])
    rows = stats.family(pd.DataFrame([{"a": "x", "b": "y", **one}]), "one")
    assert rows["verdict"].tolist() == [stats.NOT_TESTED] and np.isnan(rows["p_adjusted"].iloc[0])
    assert rows["family_size"].tolist() == [0]
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


@pytest.mark.parametrize(("seeds", "effect", "alpha"), [(3, 2.0, 0.05), (5, 1.0, 0.05), (5, 2.0, 0.05 / 9),
                                                        (10, 1.0, 0.05 / 9)])
def test_power_is_the_rejection_rate_of_simulated_t_tests(seeds: int, effect: float, alpha: float) -> None:
    """An independent reference for the noncentral t: the share of 40,000 simulated paired t-tests that reject.
    (A noncentrality of effect x sqrt(n - 1) instead of sqrt(n) is 0.06-0.12 off at these sizes.)"""
    differences = np.random.default_rng(seeds).normal(effect, 1.0, size=(40_000, seeds))
    rejected = (stats.paired_test(differences).p_value < alpha).mean()
    predicted = float(stats.power(effect, 1.0, seeds, alpha))
    assert rejected == pytest.approx(predicted, abs=tolerance(predicted, 40_000)), (rejected, predicted)


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


@pytest.mark.parametrize(("noise", "seeds"), [*((noise, 3) for noise in calibration.NOISES),
                                              ("equal variances", 5), ("sd 3x by growth", 5), ("lattice 96%", 5),
                                              ("lattice 99.5%", 5)])
def test_a_null_split_calls_something_real_in_at_most_5_percent_of_families(noise: str, seeds: int) -> None:
    """Every configuration equal: the familywise false-`real` rate of the split's whole family (init claims, growth
    main effects, their cells), under each noise model, lattices and unequal variances included."""
    rng = np.random.default_rng(seeds)
    acc = calibration.simulate(rng, FAMILIES, seeds, noise)
    false_real = calibration.real(acc, calibration.step_of(noise)).any(axis=1).mean()
    assert false_real <= stats.ALPHA + tolerance(stats.ALPHA), false_real


@pytest.mark.parametrize(("noise", "seeds"), [("equal variances", 5), ("sd 3x by init", 5), ("shared mask draw", 5)])
def test_true_effects_elsewhere_do_not_open_false_claims(noise: str, seeds: int) -> None:
    """Strong control: criterion 0 ahead by 2 sd in ERK's cells only opens the gates of its main effects; the
    claims that are still null (uniform's cells of those pairs, the other pairs and their cells) stay within 5%."""
    rng = np.random.default_rng(40 + seeds)
    acc = calibration.simulate(rng, FAMILIES, seeds, noise, growth=2 * calibration.CELL_SD, erk_only=True)
    real, null = calibration.real(acc, 0.0), calibration.still_null()
    assert (~null).sum() == 4 + 3 * 4  # the init main effect and cells; of 3 pairs, the main effect and its ERK cells
    assert real[:, ~null].any(axis=1).mean() > 0.2  # the effect is there to be found
    assert real[:, null].any(axis=1).mean() <= stats.ALPHA + tolerance(stats.ALPHA)


@pytest.mark.parametrize(("noise", "seeds"), [("equal variances", 3), ("equal variances", 10), ("lattice 99.5%", 5)])
def test_no_configuration_is_called_behind_the_chosen_best_when_all_are_equal(noise: str, seeds: int) -> None:
    """The best is chosen on the data; its comparisons are read off Holm over all pairs, so choosing does not
    inflate them (a family of the 23 comparisons with the chosen one called 12-20% behind)."""
    acc = calibration.simulate(np.random.default_rng(60 + seeds), FAMILIES // 3, seeds, noise)
    behind = calibration.behind_the_best(acc, calibration.step_of(noise)).mean()
    assert behind <= stats.ALPHA + tolerance(stats.ALPHA, FAMILIES // 3), behind


@pytest.mark.parametrize(("seeds", "growth", "init"), [(3, 0.35, None), (5, 0.95, 0.5)])
def test_main_effects_find_2_sd_effects_at_the_seed_counts_people_run(seeds: int, growth: float,
                                                                      init: float | None) -> None:
    """A growth criterion 2 sd ahead in every cell is found (its main effect against criterion 1 is `real`) at
    least 35% of the time at 3 seeds and 95% at 5; ERK 2 sd ahead at every density is found (the init main effect)
    at least 50% of the time at 5 seeds, near the power of a t-test at alpha / 7 (Holm's first step) of a contrast
    averaged over the 3 densities: 2 sqrt(3) of its sd. The cell-level family of 39 found these 1.7%, 15% and 15%."""
    rng = np.random.default_rng(80 + seeds)
    found = calibration.real(calibration.simulate(rng, FAMILIES, seeds, "equal variances",
                                                  growth=2 * calibration.CELL_SD), 0.0)[:, calibration.GROWTH_01].mean()
    assert found >= growth - tolerance(growth), found
    if init is not None:
        acc = calibration.simulate(rng, FAMILIES, seeds, "equal variances", init=2 * calibration.INIT_SD)
        predicted = float(stats.power(2.0 * np.sqrt(3), 1.0, seeds, stats.ALPHA / 7))
        found = calibration.real(acc, 0.0)[:, calibration.INIT_MAIN].mean()
        assert found >= init - tolerance(init), found
        assert predicted - tolerance(predicted) <= found <= predicted + tolerance(predicted) + 0.03, (found, predicted)


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


def test_the_calibration_decides_a_split_exactly_as_the_report_does() -> None:
    """The simulation builds its contrasts with numpy for speed; on one simulated split they must give the claims,
    p-values and verdicts of analysis/claims.py on the same runs as a table (the report's path)."""
    acc = calibration.simulate(np.random.default_rng(5), 1, 4, "equal variances", growth=2 * calibration.CELL_SD)
    inits, growths, densities = ["ERK", "uniform"], ["g0", "g1", "g2", "g3"], [0.05, 0.1, 0.2]
    runs = pd.DataFrame([{"seed": s, "sparse_init": inits[i], "growth": growths[g], "density": densities[d],
                          "acc": acc[0, s, i, g, d]}
                         for s, i, g, d in np.ndindex(acc.shape[1:])])
    report = claims.decide(claims.split_claims(runs, "acc", 0.0), "split")
    simulated = stats.paired_test(calibration.contrasts(acc), 0.0).p_value[0]
    np.testing.assert_allclose(report["p_value"].to_numpy(dtype=float), simulated)
    assert report["topic"].tolist() == calibration.TOPICS and report["parent"].tolist() == calibration.PARENTS
    np.testing.assert_array_equal(report["verdict"].eq(stats.REAL).to_numpy(), calibration.real(acc, 0.0)[0])



def test_a_family_reads_real_not_established_and_not_tested() -> None:
    """The report prints the verdicts as they are. Holm over the two tested claims: 0.001 x 2 = 0.002 is real,
    0.3 is not established, and a single pair is not tested."""
    rows = pd.DataFrame([stats.compare(pd.Series(a, index=range(len(a))), pd.Series(0.0, index=range(len(a))))
                         for a in ([3.0, 3.1, 2.9, 3.05, 2.95], [0.5, -1.0, 1.5, -0.2, 0.4], [1.0])])
    rows["p_value"] = [0.001, 0.3, np.nan]
    family = stats.family(rows, "verdicts")
    np.testing.assert_allclose(family["p_adjusted"], [0.002, 0.3, np.nan])
    assert family["verdict"].tolist() == ["real", "not established", "not tested"]


@pytest.mark.parametrize("leading", [(), (4,), (2, 3)])
@pytest.mark.parametrize("pairs", [1, 5])
def test_every_field_of_a_paired_test_has_the_leading_shape(leading: tuple[int, ...], pairs: int) -> None:
    """One test per leading index, each over the last axis: a (2, 3, 5) array is six tests of 5 pairs."""
    differences = np.random.default_rng(pairs).normal(1.0, 1.0, size=(*leading, pairs))
    test = stats.paired_test(differences)
    for field in dataclasses.fields(test):
        assert np.shape(getattr(test, field.name)) == leading, field.name
    assert np.all(test.n == pairs)
    np.testing.assert_allclose(test.diff, differences.mean(axis=-1))


def test_a_spread_of_exactly_one_step_is_seeds_not_the_lattice() -> None:
    """Differences of 0, 1 and 2 images (step 1): their sd is exactly one step, so they are tested by t."""
    test = stats.paired_test([0.0, 1.0, 2.0], step=1.0)
    assert not bool(test.tie) and float(test.p_value) == pytest.approx(scipy.stats.ttest_1samp([0, 1, 2], 0).pvalue)


def test_the_sign_flip_p_is_exact_up_to_16_pairs_and_estimated_closely_beyond() -> None:
    """1, 2 and -1: of the 8 sign patterns, 6 have a mean as far from 0 as 2/3 (all but +-(1 - 2 + 1)). Sixteen
    equal differences: only the two patterns of one sign, 2 / 2^16, which no Monte Carlo estimate of 2^16 draws
    gives exactly; however many rows are tested at once. Twenty: 2 / 2^20, estimated from 2^16 draws (below 1e-4)."""
    assert stats.sign_flip_p(np.array([[1.0, 2.0, -1.0], [2.0, 2.0, 2.0]])).tolist() == [0.75, 0.25]
    assert float(stats.sign_flip_p(np.full((1, 16), 0.5))[0]) == pytest.approx(2 / 2**16, rel=1e-9)
    assert stats.sign_flip_p(np.full((20, 3), 0.5)).tolist() == [0.25] * 20
    assert float(stats.sign_flip_p(np.full((1, 20), 0.5))[0]) < 1e-4


def test_claims_that_pass_all_their_weight_to_each_other_leave_a_third_claims_level_alone() -> None:
    """Claims 0 and 1 (1/4 each) pass everything to each other, claim 2 (1/2) to no one. By hand: 0.01 / 0.25 =
    0.04 first; claim 1 then holds 1/2 (0.02 / 0.5 = 0.04); claim 2 keeps its 1/2 (0.03 / 0.5 = 0.06)."""
    transitions = [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    np.testing.assert_allclose(stats.graphical([0.01, 0.02, 0.03], [0.25, 0.25, 0.5], transitions), [0.04, 0.04, 0.06])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the shut cell's 0 / 0, which is discarded
def test_a_gated_claim_with_p_0_stays_shut_until_its_parent_is_rejected() -> None:
    assert stats.graphical([0.5, 0.0], [1.0, 0.0], [[0, 1], [1, 0]]).tolist() == [0.5, 0.5]


def test_adjusted_p_values_are_capped_at_1() -> None:
    assert stats.holm([0.6, 0.7]).tolist() == [1.0, 1.0]  # 1.2, then 0.7 made monotone
    assert stats.graphical([0.6, 0.7], *stats.holm_graph(2)).tolist() == [1.0, 1.0]  # 1.2 and 1.4 by Holm
    assert stats.graphical([0.9, 0.95], *stats.holm_graph(2), until=0.05).tolist() == [1.0, 1.0]  # stopped at 1.8


def test_the_t_interval_of_a_mean_over_seeds() -> None:
    """Mean 10, std 2: over 4 seeds 10 +- t(0.975, 3) = 3.182 x 2 / 2; over 2, +- 12.706 x 2 / sqrt(2); none at 1."""
    low, high = stats.t_interval([10.0, 10.0, 10.0], [2.0, 2.0, 2.0], [4, 2, 1])
    np.testing.assert_allclose(low[:2], [10 - 3.182446, 10 - 12.706205 * 2 ** 0.5], rtol=1e-6)
    np.testing.assert_allclose(high[:2], [10 + 3.182446, 10 + 12.706205 * 2 ** 0.5], rtol=1e-6)
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_seeds_needed_starts_at_2_and_gives_up_past_the_search_bound() -> None:
    assert stats.seeds_needed(100.0, 1.0) == 2  # a difference of 100 sd: two seeds (power 1.0)
    assert stats.seeds_needed(0.001, 1.0) is None  # would need about 8 million seeds


def test_runs_without_any_match_are_no_test_and_repeated_runs_count_once() -> None:
    none = stats.compare(pd.Series([80.0], index=[0]), pd.Series([78.0], index=[1]))
    assert (none["n_pairs"], none["n_run_pairs"], none["n_unmatched"], none["tie"]) == (0, 0, 2, False)
    assert all(np.isnan(none[field]) for field in ("diff", "sd", "ci_low", "ci_high", "p_value"))
    # seed 0 run twice on a's side (80, 82: one run of 81), a missing value dropped: differences 3 and 2
    repeated = stats.compare(pd.Series([80.0, 82.0, 79.0, np.nan], index=[0, 0, 1, 2]),
                             pd.Series([78.0, 77.0, 75.0], index=[0, 1, 2]))
    assert (repeated["n_pairs"], repeated["n_unmatched"], repeated["diff"]) == (2, 1, 2.5)


def test_with_no_difference_the_leader_is_the_first_named() -> None:
    same = pd.Series([78.0, 79.0, 77.5], index=[0, 1, 2])
    row = stats.leader_first("a", same, "b", same + np.array([0.5, -0.5, 0.0]))
    assert (row["a"], row["b"], row["diff"]) == ("a", "b", 0.0)


def test_a_familys_verdict_seeds_needed_and_the_edge_of_alpha() -> None:
    """Two pairs are a test; an adjusted p of exactly ALPHA is not below it; the seeds needed are those at which the
    difference seen would be found at the claim's level, and none for a tie (a spread of 0.005: no t-test) or a
    single pair."""
    rows = pd.DataFrame([stats.compare(pd.Series(a, index=range(len(a))), pd.Series(0.0, index=range(len(a))))
                         for a in ([2.0, 4.0], [1.0, 2.0, 1.5], [1.0, 1.005, 0.995], [1.0])])
    rows["p_value"] = [0.001, 0.025, 0.25, np.nan]  # Holm over three: 0.001 x 3, 0.025 x 2 = 0.05, 0.25
    family = stats.family(rows, "edges")
    np.testing.assert_allclose(family["p_adjusted"], [0.003, 0.05, 0.25, np.nan])
    assert family["verdict"].tolist() == [stats.REAL, stats.NOT_ESTABLISHED, stats.NOT_ESTABLISHED, stats.NOT_TESTED]
    assert family["seeds_needed"].tolist()[:2] == [stats.seeds_needed(3.0, 2 ** 0.5, stats.ALPHA / 3),
                                                   stats.seeds_needed(1.5, 0.5, stats.ALPHA / 3)]
    assert family["seeds_needed"].iloc[2:].isna().all() and family["tie"].tolist()[2] is True


def test_holms_graph_passes_each_claims_weight_equally_to_the_others() -> None:
    weights, transitions = stats.holm_graph(3)
    np.testing.assert_allclose(weights, [1 / 3] * 3)
    np.testing.assert_allclose(transitions, [[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
