"""The race's statistics (analysis/racing.py), its replay from runs rows and report section (analysis/race_report.py),
and its error bound on a small simulation (benchmarks/racing.py). No Ray, no torch: seconds."""

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from analysis import race_report, racing
from analysis.data import load_all
from benchmarks import racing as simulation
from cldst import results
from cldst.config import RunConfig

FIXED = {"benchmark": "digits", "net": "mlp", "epochs": 1, "num_tasks": 2, "val_fraction": 0.1}


def test_one_sided_p_is_the_t_tests_upper_tail_and_the_exact_sign_flip_where_differences_are_equal():
    d = np.array([[1.0, 2.0, 3.5], [-1.0, -2.0, -3.5]])
    expected = scipy_stats.ttest_1samp(d, 0.0, axis=-1, alternative="greater").pvalue
    assert racing.one_sided_p(d) == pytest.approx(expected)
    assert racing.one_sided_p(np.full(4, 0.5)) == pytest.approx(1 / 16)  # the lattice: all four seeds agree
    assert racing.one_sided_p(np.full(4, -0.5)) == pytest.approx(1 - 1 / 16)


def test_two_seeds_agreeing_by_a_lattice_coincidence_are_a_tie_of_counts_not_a_certainty():
    """Two seeds' validation ACC behind by 34.06 and 34.04 points (an image more or less in a task of another size):
    the t-test calls that spread of 0.01 near-certain (one-sided p ~ 2e-4), the step of one image makes it a tie,
    whose sign-flip p of 1/4 removes no configuration at 2 seeds."""
    values = np.array([[98.57, 97.86], [64.51, 63.82]])  # (configurations, seeds)
    step = 100 / (5 * 73)
    assert racing.one_sided_p(values[0] - values[1]) < 1e-3
    assert racing.one_sided_p(values[0] - values[1], step) == pytest.approx(0.25)
    assert racing.race(values, [2], step=step).looks[0].left == {}
    assert racing.race(values, [2]).looks[0].left == {1: 0}
    found = race_report.Outcomes(values, values, np.zeros((2, 2), dtype=bool),
                                 {(0, 0): [100 * 70 / 73, 100.0], (1, 0): [100 * 71 / 73, 50.0]})
    assert found.step == pytest.approx(100 / (2 * 73))


def test_alpha_is_split_over_the_looks_by_seeds_and_over_the_comparisons_a_best_can_lose():
    levels = racing.look_levels([2, 4, 8], configurations=5)
    assert levels * 4 == pytest.approx([0.05 * 2 / 14, 0.05 * 4 / 14, 0.05 * 8 / 14])
    assert levels.sum() * 4 == pytest.approx(0.05)


@pytest.mark.parametrize("looks, problem", [([], "at least one"), ([1, 4], "at least 2 seeds"),
                                            ([4, 4], "must increase"), ([2, 8, 6], "must increase")])
def test_a_bad_plan_is_named(looks, problem):
    assert problem in racing.check_looks(looks)


def three_configurations() -> np.ndarray:
    """(3, 8): configuration 2 far behind, 0 and 1 close and crossing; seed offsets shared."""
    offsets = np.array([0.0, 3.0, -2.0, 1.0, 2.0, -1.0, 0.5, -3.0])
    noise = np.array([[0.3, -0.2, 0.1, -0.4, 0.2, 0.0, -0.1, 0.3],
                      [-0.1, 0.4, -0.3, 0.2, -0.2, 0.5, 0.1, -0.2],
                      [0.2, -0.3, 0.4, 0.1, -0.1, 0.2, 0.3, -0.4]])
    return np.array([90.0, 90.0, 60.0])[:, None] + offsets + noise


def test_a_configuration_far_behind_leaves_at_the_first_look_and_the_race_runs_on():
    acc = three_configurations()
    result = racing.race(acc, [4, 8])
    assert [look.seeds for look in result.looks] == [4, 8]
    assert result.looks[0].left.keys() == {2} and result.looks[0].left[2] in (0, 1)
    assert result.looks[1].left == {} and result.declared is None and result.finished
    assert result.runs == 3 * 4 + 2 * 4  # the one that left ran 4 seeds, the others 8
    rows = racing.standings(acc, result)
    assert [r["configuration"] for r in rows] == list(result.contenders)
    assert rows[0]["mean"] >= rows[1]["mean"] and rows[1]["ci_low"] < rows[1]["behind"] < rows[1]["ci_high"]


def test_the_replay_waits_for_every_run_of_a_look_and_decides_as_on_the_whole_data():
    acc = three_configurations()
    partial = acc.copy()
    partial[2, 3:] = np.nan  # the third configuration has ended 3 of the first look's 4 seeds
    waiting = racing.race(partial, [4, 8])
    assert waiting.looks == [] and waiting.next_seeds == 4 and not waiting.finished
    partial = acc.copy()
    partial[:, 6:] = np.nan
    halfway = racing.race(partial, [4, 8])
    assert halfway.looks == racing.race(acc, [4, 8]).looks[:1] and halfway.next_seeds == 8
    assert set(halfway.contenders) == set(racing.race(acc, [4, 8]).looks[1].contenders)


def test_one_left_is_the_declared_best_and_a_failed_run_leaves_against_no_one():
    acc = np.array([90.0, 60.0, 59.0])[:, None] + np.random.default_rng(2).normal(0, 0.3, (3, 6))
    failed = np.zeros(acc.shape, dtype=bool)
    failed[1, 2] = True
    result = racing.race(acc, [3, 6], failed)
    assert result.looks[0].left[1] is None  # its run on seed index 2 failed
    assert result.declared == 0 and result.finished and result.next_seeds is None


def test_wrong_declarations_with_the_top_two_tied_stay_under_alpha_and_an_uncorrected_race_exceeds_it(monkeypatch):
    tied = simulation.means(gap=1.0, tied=True)
    out = simulation.simulate(tied, (5, 10, 20, 40), reps=300, seed=7)
    assert out["declared best"] + out["declared another"] <= racing.ALPHA
    # The same race with every comparison at alpha (no correction over the looks or comparisons) errs far more.
    monkeypatch.setattr(racing, "look_levels", lambda looks, configurations, alpha=racing.ALPHA:
                        np.full(len(looks), alpha))
    loose = simulation.simulate(tied, (5, 10, 20, 40), reps=300, seed=7)
    assert loose["declared best"] + loose["declared another"] > 3 * racing.ALPHA


def test_the_race_finds_a_clear_best_with_fewer_runs_than_the_fixed_design():
    out = simulation.simulate(simulation.means(gap=2.0), (5, 10, 20, 40), reps=50, seed=3)
    assert out["declared best"] >= 0.9 and out["declared another"] == 0
    assert out["runs"] < 0.4 * simulation.CONFIGURATIONS * 40


# ---------------------------------------------------------------- replay from runs rows, report section


def write_run(folder, experiment, trial_id, config, seed, status, val=None, error=None):
    resolved = RunConfig.from_dict({**FIXED, **config, "seed": seed}).resolve().to_dict()
    common = results.common_columns(resolved, experiment, trial_id, "node")
    rows = [] if status == "error" else [
        {"acc": [val + 1] * (t + 1), "fwt_acc": [], "val_acc": [val] * (t + 1)} for t in range(2)]
    results.write_part(folder, "runs", trial_id, [results.run_row(common, rows, status, error, 1.0)])


def plan(experiment: str, densities: list[float], seeds: list[int], looks: list[int]) -> race_report.Plan:
    configs = [{k: v for k, v in RunConfig.from_dict({**FIXED, "density": d, "seed": 0}).resolve().to_dict().items()
                if k != "seed"} for d in densities]
    return race_report.Plan(experiment, configs, seeds, looks)


def test_outcomes_map_rows_to_configuration_and_seed_and_leave_out_a_lost_trials_row(tmp_path):
    p = plan("r", [0.2, 0.1], [5, 6, 7], [2, 3])
    write_run(tmp_path, "r", "a", {"density": 0.2}, 5, "ok", 80.0)
    write_run(tmp_path, "r", "b", {"density": 0.1}, 6, "error", error="RuntimeError: boom")
    write_run(tmp_path, "r", "c", {"density": 0.1}, 5, "error", error="lost: the search driver stopped")
    write_run(tmp_path, "r", "d", {"density": 0.05}, 5, "ok", 99.0)  # not in the plan
    found = race_report.outcomes(results.load(tmp_path).runs.to_pylist(), p)
    assert found.val[0, 0] == 80.0 and found.test[0, 0] == 81.0
    assert found.failed.tolist() == [[False, False, False], [False, True, False]]
    assert np.isnan(found.val[1]).all() and found.ended == 2


def test_the_report_section_names_the_looks_who_left_against_whom_and_the_end(tmp_path):
    folder = tmp_path / "race"
    p = plan("race", [0.2, 0.1, 0.05], [0, 1, 2, 3], [2, 4])
    values = {0.2: [90.0, 91.0, 89.5, 90.5], 0.1: [89.0, 91.5, 88.0, 90.0], 0.05: [40.0, 42.0, 39.0, 41.5]}
    for density, vals in values.items():
        for seed, val in enumerate(vals[:2] if density == 0.05 else vals):
            write_run(folder, "race", f"t{density}-{seed}", {"density": density}, seed, "ok", val)
    (folder / "sweep.json").write_text(json.dumps({"script": "race", "experiment": "race", "looks": p.looks,
                                                   "configurations": p.configurations, "seeds": p.seeds}))
    (section,) = race_report.sections(load_all(folder))
    assert section.startswith("## Race: race")
    assert "look 1/2 at 2 seeds" in section and "density=0.05 (beaten by density=0.1)" in section  # the surer win
    assert "no configuration beat every other: 2 in contention" in section
    assert "10 runs of the fixed design's 12 (3 x 4 seeds), 2 saved" in section
    table = section.split("In contention at the end")[1]
    assert table.index("density=0.2") < table.index("density=0.1")  # ranked by mean validation ACC
