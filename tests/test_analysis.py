"""analysis/: tidy loading, exact tables, findings that follow the data, the report end to end.

The fixture (tests/analysis_fixture.py) writes Parquet with cldst's own writer: known ACC/BWT
per seed (GRID), a failed, a stopped and a still-running trial, and an Optuna search.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats
from analysis_fixture import GRID, SEARCH, Writer, build_grid, build_search, config

import analysis
from analysis import claims, findings, search, stats, tables
from analysis.best import best_configs
from analysis.findings import comparisons, detectable, evidence, sentences
from analysis.report import default_out, main

REPO = Path(__file__).resolve().parents[1]

FIGURES = ["acc_vs_density.png", "accuracy_matrix.png", "avg_acc_over_tasks.png", "capacity_over_tasks.png",
           "search_history_search.png", "param_importance_search.png", "comparisons.png"]
PANEL_5X2 = "digits · mlp · 5 tasks x 2 classes · update every 10 · protocol clean"
PANEL_2X5 = "digits · mlp · 2 tasks x 5 classes · update every 10 · protocol clean"
# Runs the report with torch and ray impossible to import: any attempt raises ImportError.
NO_TORCH = """
import importlib.abc, runpy, sys
BLOCKED = {"torch", "ray", "torchvision"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["analysis.report", *sys.argv[1:]]
try:
    runpy.run_module("analysis.report", run_name="__main__")
finally:
    assert not BLOCKED & {name.split(".")[0] for name in sys.modules}, "torch or ray got imported"
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    build_grid(root)
    build_search(root)
    return root


@pytest.fixture(scope="module")
def report_run(results: Path) -> subprocess.CompletedProcess:
    """The whole report, once, in a subprocess where torch and ray cannot be imported."""
    return subprocess.run([sys.executable, "-c", NO_TORCH, str(results / "grid"), str(results / "search"),
                           "--out", str(results / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)


def grid_summary(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = analysis.load(root / "grid")
    return runs, tables.summary(runs)


def test_load_gives_tidy_runs_and_tasks(results: Path) -> None:
    runs = analysis.load(results / "grid")
    assert runs["status"].value_counts().to_dict() == {"ok": 22, "error": 1, "stopped": 1, "running": 1}
    running = runs[runs["status"] == "running"].iloc[0]
    assert running["tasks_done"] == 2 and pd.isna(running["acc"])
    assert {"benchmark", "density", "sparse_init", "growth", "seed", "split", "eval_head", "acc", "bwt"} <= set(runs)
    first = runs[runs["trial_id"] == "grid_000"].iloc[0]
    assert first["command"].startswith("cldst train --dataset digits --net mlp") and "--seed 0" in first["command"]
    tasks = analysis.load(results / "grid", kind="tasks")
    assert len(tasks) == 20 * 5 + 2 * 2 + 2 + 3 + 2
    assert len(analysis.load([results, results / "grid"])) == len(runs) + 6  # no duplicates; search adds 6
    with pytest.raises(ValueError, match="kind"):
        analysis.load(results, kind="trials")


def test_summary_has_exact_means_and_stds_over_ok_runs(results: Path) -> None:
    _runs, table = grid_summary(results)
    assert len(table) == len(GRID)
    for (tasks, density, init, growth), values in GRID.items():
        row = table[(table["num_tasks"] == tasks) & (table["density"] == density) & (table["sparse_init"] == init)
                    & (table["growth"] == growth)].iloc[0]
        accs, bwts = [v[0] for v in values], [v[1] for v in values]
        assert row["n_ok"] == len(values)
        assert row["acc_mean"] == pytest.approx(statistics.mean(accs))
        assert row["bwt_mean"] == pytest.approx(statistics.mean(bwts))
        if len(values) > 1:
            assert row["acc_std"] == pytest.approx(statistics.stdev(accs))
        else:
            assert pd.isna(row["acc_std"])  # one seed: no spread, not 0
    erk = table[(table["density"] == 0.1) & (table["sparse_init"] == "ERK") & (table["growth"] == "random")
                & (table["num_tasks"] == 5)].iloc[0]
    assert (erk["acc_mean"], erk["acc_std"], erk["bwt_mean"], erk["bwt_std"]) == (82.0, 2.0, -1.0, 0.5)
    assert (erk["n_error"], erk["n_stopped"], erk["n_running"]) == (1, 0, 0)  # the error's ACC 5.0 left out
    assert table["n_stopped"].sum() == 1 and table["n_running"].sum() == 1


def test_comparison_table_is_the_papers_layout(results: Path) -> None:
    _runs, table = grid_summary(results)
    by_title = {title: rows for title, _slug, rows in tables.panels(table)}
    assert list(by_title) == [PANEL_2X5, PANEL_5X2]
    assert tables.comparison_markdown(by_title[PANEL_5X2]) == "\n".join([
        "| init | growth | density 0.1 | density 0.2 |",
        "|---|---|---|---|",
        "| ERK | momentum | 86.00 ± 1.00 (n=3) | 92.00 ± 0.71 (n=2) |",
        "| ERK | random | 82.00 ± 2.00 (n=3) | 91.00 ± 1.41 (n=2) |",
        "| uniform | momentum | 75.00 ± 1.00 (n=3) | 92.00 ± 1.41 (n=2) |",
        "| uniform | random | 71.00 ± 1.00 (n=3) | 90.00 ± 2.83 (n=2) |"])
    assert "| ERK | random | 95.00 ± – (n=1) |" in tables.comparison_markdown(by_title[PANEL_2X5])
    wide = tables.comparison(by_title[PANEL_5X2]).set_index(["sparse_init", "growth"])
    assert wide.loc[("uniform", "random"), "acc_std@0.2"] == pytest.approx(8**0.5)


def texts(found: list, panel: str, topic: str) -> list[str]:
    return [f.text for f in found if f.panel == panel and f.topic == topic]


def test_comparisons_pair_seeds_and_average_within_a_seed(results: Path) -> None:
    """The fixture by hand: per-seed contrasts, then scipy's one-sample t-test on them; each split one family."""
    runs, table = grid_summary(results)
    rows = comparisons(runs, table)
    assert rows.index.equals(pd.RangeIndex(len(rows)))  # a row per claim over both splits, numbered from 0
    rows = rows.set_index(["num_tasks", "topic", "density", "sparse_init"])
    per_seed = {  # ERK - uniform, averaged over random and momentum within each seed; momentum - random
        # the init main effect: the growth x density cells averaged within each seed (seed 2 ran 2 of them)
        (5, "init", np.nan, ""): [(10 + 11 + 2 + 0.5) / 4, (11 + 11 + 0 - 0.5) / 4, (12 + 11) / 2],
        (5, "init cell", 0.1, ""): [(10 + 11) / 2, (11 + 11) / 2, (12 + 11) / 2],
        (5, "init cell", 0.2, ""): [(2 + 0.5) / 2, (0 - 0.5) / 2],
        # the main effect: the 4 init x density cells averaged within each seed (seed 2 ran 2 of them)
        (5, "growth", np.nan, ""): [(5 + 1.5 + 4 + 3) / 4, (4 + 0.5 + 4 + 1) / 4, (3 + 4) / 2],
        (5, "growth cell", 0.1, "ERK"): [5.0, 4.0, 3.0],
        (5, "growth cell", 0.2, "ERK"): [1.5, 0.5],  # seed 2 of ERK/momentum is still running: no pair
        (5, "growth cell", 0.2, "uniform"): [3.0, 1.0]}
    for key, diffs in per_seed.items():
        row = rows.loc[key]
        expected = scipy.stats.ttest_1samp(diffs, 0.0)
        assert (row["n_pairs"], row["diff"]) == (len(diffs), pytest.approx(statistics.mean(diffs))), key
        assert row["p_value"] == pytest.approx(expected.pvalue), key
        low, high = expected.confidence_interval(0.95)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high)), key
    assert rows.loc[(5, "init", np.nan, ""), "n_run_pairs"] == 10
    assert rows.loc[(5, "init cell", 0.1, ""), "n_run_pairs"] == 6
    assert rows.loc[(5, "growth", np.nan, ""), "n_run_pairs"] == 10
    assert rows.loc[(5, "growth cell", 0.2, "ERK"), "n_unmatched"] == 0  # the running trial is not an ok run
    # momentum - random is 4 on every uniform seed: a tie of counts, so the exact sign-flip p of 3 agreeing signs
    uniform = rows.loc[(5, "growth cell", 0.1, "uniform")]
    assert (uniform["p_value"], uniform["tie"]) == (0.25, True)
    assert rows.loc[(2, "init", np.nan, ""), "verdict"] == stats.NOT_TESTED  # one seed
    # each split is its own family: 2 primary claims (weight 1/2 each), 2 init cells and 4 growth cells in 5x2
    five = rows.loc[5].sort_index()  # sorted: label lookups on a MultiIndex
    assert set(five["family"]) == {PANEL_5X2} and set(five["family_size"]) == {8}
    primary = five[five.index.get_level_values("topic").isin(["init", "growth"])]
    assert primary["level"].tolist() == pytest.approx([stats.ALPHA / 2] * 2)
    init_share = stats.ALPHA / 2 * claims.CELL_SHARE["init"] / 2  # all the main effect's weight, over 2 densities
    assert five.loc["init cell", "level"].tolist() == pytest.approx([init_share] * 2)
    share = stats.ALPHA / 2 * claims.CELL_SHARE["growth"] / 4  # a quarter of the main effect's weight, over 4 cells
    assert five.loc["growth cell", "level"].tolist() == pytest.approx([share] * 4)
    assert primary["p_adjusted"].min() == pytest.approx(2 * primary["p_value"].min())
    for topic in ("init", "growth"):  # no cell before its gate
        main = five.loc[(topic, np.nan, "")]
        assert (five.loc[f"{topic} cell", "p_adjusted"] >= main["p_adjusted"] - 1e-12).all()
    # the growth main effect pools the cells' evidence: real, where no cell alone is; the init main effect is not
    # (density 0.2 shows nothing), so its density 0.1, p 0.0007 alone, stays untested
    real = rows[rows["verdict"] == stats.REAL].reset_index()
    assert [(r.num_tasks, r.topic, None if pd.isna(r.density) else r.density) for r in real.itertuples()] == [
        (5, "growth", None)]
    assert rows.loc[(5, "init cell", 0.1, ""), "p_value"] < 0.001


def test_findings_follow_the_tests(results: Path) -> None:
    runs, table = grid_summary(results)
    found = sentences(comparisons(runs, table), table, runs)
    assert texts(found, PANEL_5X2, "family") == [
        "This split is one family of 8 tested claims (1 init main effect(s), 1 growth main effect(s), 2 init cell(s) "
        "and 4 growth cell(s), each tested only once its main effect is real); its familywise error rate is 0.05."]
    # too few seeds, said as such: not "no effect"; each density's difference beside the average
    assert texts(found, PANEL_5X2, "init") == [
        "Over this split's cells, ERK and uniform initialisation are not told apart with 3 seeds: ERK - uniform = "
        "+7.58 points (95% CI -0.87 to 16.03, 3 seeds (10 run pairs), adjusted p = 0.070); too few seeds to tell: a "
        "difference of 7.58 points needs about 5 seeds at this family's level, and these seeds would find a "
        "difference of about 15.73 points (80% power; spread estimated with 2 degrees of freedom); by density (point "
        "estimates): 0.1 +11.00, 0.2 +0.50."]
    assert texts(found, PANEL_5X2, "init cell") == []  # gated shut
    assert texts(found, PANEL_5X2, "growth") == [
        "Over this split's cells, momentum growth wins (85.10 mean final ACC): ahead of random by 3.08 points (95% CI "
        "1.55 to 4.62, 3 seeds (10 run pairs), adjusted p = 0.026)."]
    assert texts(found, PANEL_2X5, "family") == ["No claim of this split is tested yet: not tested (1 seed)."]
    assert texts(found, PANEL_2X5, "init") == [
        "Over this split's cells, ERK against uniform initialisation is not tested (1 seed): ERK - uniform = +2.00 "
        "points."]
    assert texts(found, PANEL_2X5, "growth") == []  # one growth criterion: nothing to compare
    (power,) = texts(found, PANEL_5X2, "power")
    assert power == ("To find a 1-point difference with 80% power in this family of 8: init claims: about 113 seeds "
                     "(paired spread 3.40 points, estimated from 3 seeds); growth claims: about 7 seeds (paired spread "
                     "0.62 points, estimated from 3 seeds).")
    assert texts(found, PANEL_5X2, "bwt") == [
        "Backward transfer ranges from -1.50 to 0.00 points over 20 finished runs; 3 of them lost accuracy on "
        "earlier tasks (BWT < 0), which parameter isolation should prevent."]
    assert texts(found, PANEL_2X5, "bwt") == [
        "Backward transfer is 0.00 in all 2 finished runs: no forgetting, as parameter isolation promises."]


def test_a_growth_criterion_wins_only_when_all_its_comparisons_are_real(tmp_path: Path) -> None:
    writer = Writer(tmp_path, "growth")
    noise = iter(np.random.default_rng(0).normal(0.0, 0.3, size=18))
    for seed in range(6):
        offset = [0.0, 3.0, -2.0, 1.0, -1.0, 2.5][seed]  # shared by every criterion of that seed
        for growth, effect in (("momentum", 6.0), ("random", 0.0), ("gradient", 0.0)):
            writer.trial(config(growth=growth, seed=seed), 80.0 + offset + effect + next(noise))
    runs = analysis.load(tmp_path)
    table = tables.summary(runs)
    found = sentences(comparisons(runs, table), table, runs)
    (growth,) = [f for f in found if f.topic == "growth"]
    assert growth.winner == "momentum" and growth.verdict == stats.REAL
    assert growth.text.startswith("Over this split's cells, momentum growth wins (")
    assert "ahead of gradient by" in growth.text and "ahead of random by" in growth.text


@pytest.mark.parametrize(("field", "levels", "winner", "one", "several"), [
    ("growth", ("momentum", "random"), "growth", "growth criterion", "Growth criteria"),
    ("prune", ("magnitude", "SET"), "pruning", "prune criterion", "Prune criteria"),
    ("death_rate", (0.3, 0.5), "death rate", "death rate", "Death rates"),
    ("optimizer", ("adam", "sgd"), "optimizer", "optimizer", "Optimizers")])
def test_a_compared_setting_is_named_in_its_own_words(tmp_path: Path, field: str, levels: tuple, winner: str,
                                                      one: str, several: str) -> None:
    """Growth, or a crossed setting, 3 points ahead: "<level> <setting> wins"; with no effect: "no <setting>
    wins" over 6 seeds, "<Settings> ... are not tested" with one."""
    rng = np.random.default_rng(3)
    found = {}
    for name, seeds, effect in (("ahead", 6, 3.0), ("tied", 6, 0.0), ("one-seed", 1, 0.0)):
        writer = Writer(tmp_path / name, name)
        for seed in range(seeds):
            offset = rng.normal(0.0, 3.0)
            for init, level in itertools.product(("ERK", "uniform"), levels):
                writer.trial(dict(config(sparse_init=init, seed=seed), **{field: level}), 80.0 + offset +
                             effect * (level == levels[0]) + rng.normal(0.0, 0.3))
        runs = analysis.load(tmp_path / name)
        table = tables.summary(runs)
        (found[name],) = [f for f in sentences(comparisons(runs, table), table, runs) if f.topic == field]
    assert found["ahead"].verdict == stats.REAL and found["ahead"].winner == levels[0]
    assert found["ahead"].text.startswith(f"Over this split's cells, {levels[0]} {winner} wins ("), found["ahead"].text
    assert found["tied"].verdict == stats.NOT_ESTABLISHED, found["tied"].text
    assert found["tied"].text.startswith(f"Over this split's cells, no {one} wins: "), found["tied"].text
    assert found["one-seed"].verdict == stats.NOT_TESTED
    assert found["one-seed"].text.startswith(f"{several} over this split's cells ("), found["one-seed"].text


def test_a_growth_criterion_ahead_on_paired_seeds_leads_even_below_on_the_mean(tmp_path: Path) -> None:
    """momentum has a sixth seed at 99 that random lacks: momentum's mean is higher, yet random is ahead on every
    seed both ran. The finding must not call random 'cannot be told apart' from the leader, or the leader
    momentum."""
    writer = Writer(tmp_path, "unbalanced")
    noise = iter(np.random.default_rng(1).normal(0.0, 0.2, size=11))
    for seed in range(6):
        writer.trial(config(growth="momentum", seed=seed), 99.0 if seed == 5 else 80.0 + seed + next(noise))
        if seed < 5:
            writer.trial(config(growth="random", seed=seed), 82.0 + seed + next(noise))
    runs = analysis.load(tmp_path)
    table = tables.summary(runs)
    found = sentences(comparisons(runs, table), table, runs)
    (growth,) = [f for f in found if f.topic == "growth"]
    assert growth.winner == "random" and growth.verdict == stats.REAL, growth.text
    assert growth.text.startswith("Over this split's cells, random growth wins (")
    assert "ahead of momentum by 1.98 points (95% CI 1.72 to 2.23, 5 seeds; 1 run(s) without a pair left out" \
        in growth.text


CLAIM = {"n_pairs": 10, "n_run_pairs": 10, "n_unmatched": 0, "verdict": stats.REAL, "p_adjusted": 0.0123,
         "tie": False, "ci_low": 2.333, "ci_high": 3.346}


@pytest.mark.parametrize(("changed", "expected"), [
    ({}, "95% CI 2.33 to 3.35, 10 seeds, adjusted p = 0.012"),
    ({"n_run_pairs": 40, "p_adjusted": 0.0009}, "95% CI 2.33 to 3.35, 10 seeds (40 run pairs), adjusted p < 0.001"),
    ({"n_pairs": 2, "n_run_pairs": 2, "n_unmatched": 3, "p_adjusted": 0.001},
     "95% CI 2.33 to 3.35, 2 seeds; 3 run(s) without a pair left out, adjusted p = 0.001"),
    ({"tie": True}, "10 seeds, spread below one test image: a tie of counts, so the exact sign-flip test, adjusted "
                    "p = 0.012"),
    ({"n_pairs": 1, "n_run_pairs": 1, "verdict": stats.NOT_TESTED}, "1 seed: not tested"),
    ({"n_pairs": 0, "n_run_pairs": 0, "n_unmatched": 4, "verdict": stats.NOT_TESTED},
     "no seed run by both, so no test"),
])
def test_the_evidence_of_a_claim_names_its_seeds_pairs_and_adjusted_p(changed: dict, expected: str) -> None:
    assert evidence(pd.Series({**CLAIM, **changed})) == expected


OPEN = {"n_pairs": 3, "diff": -1.5, "ci_low": -4.0, "ci_high": 1.0, "mde": 3.456, "seeds_needed": 12.0}


@pytest.mark.parametrize(("changed", "expected"), [
    ({}, "; too few seeds to tell: a difference of 1.50 points needs about 12 seeds at this family's level, and these "
         "seeds would find a difference of about 3.46 points (80% power; spread estimated with 2 degrees of freedom)"),
    ({"n_pairs": 2, "seeds_needed": np.nan, "mde": 100.0},
     "; too few seeds to tell: a difference of 1.50 points needs more than 10000 seeds at this family's level, and "
     "these seeds would find a difference of about 100.00 points (80% power; spread estimated with 1 degree of "
     "freedom)"),
    ({"mde": 100.01}, "; too few seeds to tell: a difference of 1.50 points needs about 12 seeds at this family's "
                      "level, and these seeds would find no difference on the 0-100 scale (80% power; spread "
                      "estimated with 2 degrees of freedom)"),
    ({"ci_low": -0.99, "ci_high": 0.99}, "; its 95% CI excludes any difference of 1 point or more"),
    ({"ci_low": -1.0, "ci_high": 0.5}, None),  # an interval that reaches 1 point does not exclude it
    ({"ci_low": -0.5, "ci_high": 1.0}, None),
    ({"mde": np.nan}, ""),
    ({"ci_low": np.nan, "ci_high": np.nan}, ""),
])
def test_an_open_claim_says_whether_its_interval_rules_out_a_point_or_its_seeds_are_too_few(changed: dict,
                                                                                             expected: str | None):
    said = detectable(pd.Series({**OPEN, **changed}))
    if expected is None:
        assert said.startswith("; too few seeds to tell: ")
    else:
        assert said == expected


@pytest.mark.parametrize(("ci", "said"), [
    ((-0.99, 0.99), "cannot be told apart"),  # the interval rules out a point either way
    ((-1.0, 0.5), "are not told apart with 3 seeds"),
    ((-0.5, 1.0), "are not told apart with 3 seeds"),
    ((np.nan, np.nan), "are not told apart with 3 seeds"),
])
def test_an_open_claim_cannot_be_told_apart_only_when_its_interval_rules_out_a_point(ci: tuple, said: str) -> None:
    assert findings._open(pd.Series({"n_pairs": 3, "ci_low": ci[0], "ci_high": ci[1]})) == said


def test_a_splits_family_counts_its_tested_claims_by_question() -> None:
    def row(topic: str, p: float, n_pairs: int = 3) -> dict:
        return {"topic": topic, "p_value": p, "family_size": 7, "n_pairs": n_pairs}

    untested = pd.DataFrame([row(claims.INIT, np.nan, 1), row(claims.GROWTH, np.nan, 0)])
    assert findings._family_finding("T", untested) == findings.Finding(
        "T", "family", "", "No claim of this split is tested yet: not tested (1 seed).")  # its first claim's seeds
    tested = [row(claims.INIT, 0.5), row(claims.GROWTH, np.nan), row(claims.INIT_CELL, 0.1),
              row(claims.INIT_CELL, 0.2), row(claims.INIT_CELL, np.nan), row(claims.GROWTH_CELL, np.nan)]
    assert findings._family_finding("T", pd.DataFrame(tested)) == findings.Finding(
        "T", "family", "", "This split is one family of 7 tested claims (1 init main effect(s), 0 growth main "
                           "effect(s), 2 init cell(s), each tested only once its main effect is real); its "
                           "familywise error rate is 0.05.")
    tested[-1]["p_value"] = 0.3
    assert "2 init cell(s) and 1 growth cell(s), each" in findings._family_finding("T", pd.DataFrame(tested)).text
    assert findings._untested(pd.Series(tested[0])) == "not tested (3 seeds)"


INIT_CLAIM = {**CLAIM, "topic": claims.INIT, "a": "ERK", "b": "uniform", "diff": 2.84, "reversed_cells": "",
              "heterogeneity_p": 0.5, "mde": 1.5, "seeds_needed": 4.0}
BY_DENSITY = "; by density (point estimates): 0.1 +3.00, 0.2 -0.25"
REAL_EVIDENCE = "95% CI 2.33 to 3.35, 10 seeds, adjusted p = 0.012"


@pytest.mark.parametrize(("changed", "verdict", "text"), [
    ({}, stats.REAL, f"Over this split's cells, ERK initialisation beats uniform by 2.84 points ({REAL_EVIDENCE})"
                     f"{BY_DENSITY}."),
    ({"reversed_cells": "density 0.2"}, stats.REAL,
     f"Over this split's cells, ERK initialisation beats uniform by 2.84 points ({REAL_EVIDENCE}){BY_DENSITY}; but "
     "ERK - uniform has its unadjusted 95% CI on the other side of 0 in density 0.2: the average may hide a reversal."),
    ({"verdict": stats.NOT_ESTABLISHED, "ci_low": -0.5, "ci_high": 6.0}, stats.NOT_ESTABLISHED,
     "Over this split's cells, ERK and uniform initialisation are not told apart with 10 seeds: ERK - uniform = +2.84 "
     "points (95% CI -0.50 to 6.00, 10 seeds, adjusted p = 0.012); too few seeds to tell: a difference of 2.84 "
     "points needs about 4 seeds at this family's level, and these seeds would find a difference of about 1.50 "
     f"points (80% power; spread estimated with 9 degrees of freedom){BY_DENSITY}."),
    ({"verdict": stats.NOT_TESTED, "n_pairs": 1, "n_run_pairs": 1}, stats.NOT_TESTED,
     f"Over this split's cells, ERK against uniform initialisation is not tested (1 seed): ERK - uniform = +2.84 "
     f"points{BY_DENSITY}."),
    ({"verdict": stats.NOT_TESTED, "n_pairs": 0}, stats.NOT_TESTED,
     "ERK and uniform initialisation were never run with the same seed, growth criterion and density: no "
     "comparison."),
])
def test_the_init_finding_of_each_verdict_by_hand(changed: dict, verdict: str, text: str) -> None:
    cells = pd.DataFrame({"density": [0.1, 0.2], "diff": [3.0, -0.25]})
    found = findings._init_finding("T", pd.Series({**INIT_CLAIM, **changed}), cells)
    assert found == findings.Finding("T", claims.INIT, verdict, text, "ERK" if verdict == stats.REAL else None)
    if verdict != stats.NOT_TESTED:  # no cell, no word of densities
        assert BY_DENSITY not in findings._init_finding("T", pd.Series({**INIT_CLAIM, **changed}), cells[:0]).text


def test_a_main_effect_names_each_cell_that_may_disagree_with_it() -> None:
    rows = pd.DataFrame([
        {"a": "A", "b": "B", "reversed_cells": "density 0.2", "heterogeneity_p": 0.001},  # the reversal is named
        {"a": "C", "b": "D", "reversed_cells": "", "heterogeneity_p": 0.01},
        {"a": "E", "b": "F", "reversed_cells": "", "heterogeneity_p": stats.ALPHA},  # not below ALPHA
        {"a": "G", "b": "H", "reversed_cells": np.nan, "heterogeneity_p": np.nan},  # one cell: nothing to compare
    ])
    assert findings._disagreements(rows) == (
        "; but A - B has its unadjusted 95% CI on the other side of 0 in density 0.2; C - D differs between cells "
        "(unadjusted Friedman p = 0.010): the average may hide a reversal")
    assert findings._disagreements(rows[2:]) == ""


@pytest.mark.parametrize(("topic", "text"), [
    (claims.INIT_CELL, "At density 0.1, ERK initialisation beats uniform by"),
    (claims.GROWTH_CELL, "With ERK initialisation at density 0.1, ERK growth beats uniform by"),
    ("prune cell", "With ERK initialisation and random growth at density 0.1, ERK pruning beats uniform by"),
    ("death_rate cell", "With ERK initialisation and random growth at density 0.1, ERK death rate beats uniform by"),
])
def test_a_real_cell_is_named_by_where_it_lies(topic: str, text: str) -> None:
    row = pd.Series({**INIT_CLAIM, "topic": topic, "density": 0.1, "sparse_init": "ERK", "growth": "random"})
    assert findings._cell_finding("T", row) == findings.Finding("T", topic, stats.REAL,
                                                                f"{text} 2.84 points ({REAL_EVIDENCE}).", "ERK")


def test_the_seeds_a_family_needs_come_from_the_paired_spreads_of_its_tested_claims() -> None:
    def row(topic: str, sd: float, n_pairs: int = 5, level: float = 0.05, tie: bool = False) -> dict:
        return {"topic": topic, "sd": sd, "n_pairs": n_pairs, "level": level, "tie": tie, "family_size": 7}

    rows = pd.DataFrame([row(claims.INIT, 2.0), row(claims.INIT, 1.0, 2, 0.025),
                         row(claims.INIT, 9.0, tie=True), row(claims.INIT, 9.0, 1),  # left out: a tie, one seed
                         row(claims.GROWTH, 9.0, 1), row(claims.GROWTH, 1.0, 2), row(claims.INIT_CELL, 9.0)])
    spread = math.sqrt((2.0**2 + 1.0**2) / 2)  # the root mean square of the two tested init claims' spreads
    needed = stats.seeds_needed(1.0, spread, 0.025)  # at the lower of their levels
    assert findings._power_finding("T", rows) == [findings.Finding(
        "T", "power", "", f"To find a 1-point difference with 80% power in this family of 7: init claims: about "
                          f"{needed} seeds (paired spread 1.58 points, estimated from 5 seeds); growth claims: about "
                          f"{stats.seeds_needed(1.0, 1.0, 0.05)} seeds (paired spread 1.00 points, estimated from 2 "
                          "seeds).")]
    far = pd.DataFrame([row(claims.GROWTH, 1000.0)])
    assert findings._power_finding("T", far)[0].text.endswith(
        ": growth claims: more than 10000 seeds (paired spread 1000.00 points, estimated from 5 seeds).")
    assert findings._power_finding("T", rows[rows["n_pairs"] < 2]) == []


@pytest.mark.parametrize(("bwt", "verdict", "text"), [
    ([0.0, -0.004, 0.004], "none", "Backward transfer is 0.00 in all 3 finished runs: no forgetting, as parameter "
                                   "isolation promises."),
    ([-0.5, 0.0, 0.2], "forgetting", "Backward transfer ranges from -0.50 to 0.20 points over 3 finished runs; 1 of "
                                     "them lost accuracy on earlier tasks (BWT < 0), which parameter isolation should "
                                     "prevent."),
    ([-0.005, 0.005], "none", "Backward transfer ranges from -0.01 to 0.01 points over 2 finished runs; 0 of them lost "
                              "accuracy on earlier tasks (BWT < 0), which parameter isolation should prevent."),
])
def test_the_bwt_finding_says_whether_isolation_kept_its_promise(bwt: list, verdict: str, text: str) -> None:
    assert findings._bwt_finding("T", pd.Series(bwt)) == [findings.Finding("T", "bwt", verdict, text)]
    assert findings._bwt_finding("T", pd.Series([], dtype=float)) == []


GROWTH_MEANS = pd.Series({"momentum": 82.0, "random": 80.0, "gradient": 78.0, "magnitude": 76.0, "unpaired": 99.0})


def growth_claims(*pairs: tuple[str, str, str, float, float]) -> pd.DataFrame:
    """Hand-made main effects of growth: (a, b, verdict, diff, p)."""
    return pd.DataFrame([{**INIT_CLAIM, "topic": claims.GROWTH, "a": a, "b": b, "verdict": verdict, "diff": diff,
                          "p_value": p, "mde": np.nan} for a, b, verdict, diff, p in pairs])


def growth_evidence(rows: pd.DataFrame, a: str, b: str) -> str:
    (row,) = [row for _, row in rows.iterrows() if (row["a"], row["b"]) == (a, b)]
    return evidence(row)


def test_the_growth_finding_ranks_the_levels_and_names_those_behind_for_real() -> None:
    """Three growth criteria (and a mean with no claim, never named): one that beats both others for real wins;
    one that beats only one is the leader of those not told apart, the closest call (lowest p among its open
    claims) named; none tested ranks them all by mean."""
    wins = growth_claims(("momentum", "random", stats.REAL, 2.0, 0.01),
                         ("momentum", "gradient", stats.REAL, 4.0, 0.001),
                         ("random", "gradient", stats.NOT_ESTABLISHED, 2.0, 0.3))
    assert findings._growth_finding("T", wins, GROWTH_MEANS) == findings.Finding(
        "T", "growth", stats.REAL, "Over this split's cells, momentum growth wins (82.00 mean final ACC): ahead of "
        f"random by 2.00 points ({growth_evidence(wins, 'momentum', 'random')}); ahead of gradient by 4.00 points "
        f"({growth_evidence(wins, 'momentum', 'gradient')}).", "momentum")
    # random - gradient has the lowest p of all, but the closest call is among the leader's own claims
    open_ = growth_claims(("momentum", "random", stats.NOT_ESTABLISHED, 2.0, 0.2),
                          ("momentum", "gradient", stats.REAL, 4.0, 0.001),
                          ("momentum", "magnitude", stats.REAL, 6.0, 0.001),
                          ("random", "gradient", stats.NOT_ESTABLISHED, 2.0, 0.1))
    assert findings._growth_finding("T", open_, GROWTH_MEANS) == findings.Finding(
        "T", "growth", stats.NOT_ESTABLISHED, "Over this split's cells, no growth criterion wins: momentum 82.00, "
        "random 80.00 are not told apart with 10 seeds (closest call momentum - random = +2.00 points, "
        f"{growth_evidence(open_, 'momentum', 'random')}); behind momentum for real: gradient by 4.00 points "
        f"({growth_evidence(open_, 'momentum', 'gradient')}); magnitude by 6.00 points "
        f"({growth_evidence(open_, 'momentum', 'magnitude')}).")
    # the highest mean is random's, but momentum beats it for real on paired seeds: momentum leads, and wins
    paired = growth_claims(("momentum", "random", stats.REAL, 1.0, 0.01),
                           ("momentum", "gradient", stats.REAL, 4.0, 0.001),
                           ("random", "gradient", stats.NOT_ESTABLISHED, 5.0, 0.3))
    found = findings._growth_finding("T", paired, GROWTH_MEANS.replace({80.0: 83.0}))
    assert (found.winner, found.verdict) == ("momentum", stats.REAL)
    assert found.text.startswith("Over this split's cells, momentum growth wins (82.00 mean final ACC): ahead of "
                                 "random by 1.00 points (")
    untested = growth_claims(("momentum", "random", stats.NOT_TESTED, 2.0, np.nan),
                             ("random", "gradient", stats.NOT_TESTED, 2.0, np.nan)).assign(n_pairs=1)
    assert findings._growth_finding("T", untested, GROWTH_MEANS) == findings.Finding(
        "T", "growth", stats.NOT_TESTED, "Growth criteria over this split's cells (momentum 82.00, random 80.00, "
        "gradient 78.00) are not tested (1 seed).")


def test_findings_flip_with_the_fixture(tmp_path: Path) -> None:
    build_grid(tmp_path, flip=True)
    runs, table = grid_summary(tmp_path)
    rows = comparisons(runs, table)
    found = sentences(rows, table, runs)
    init = [f for f in found if f.panel == PANEL_5X2 and f.topic == "init"]
    assert [(f.winner, f.verdict) for f in init] == [(None, stats.NOT_ESTABLISHED)]
    assert init[0].text.startswith("Over this split's cells, uniform and ERK initialisation are not told apart with "
                                   "3 seeds: uniform - ERK = +7.58 points")
    growth = rows[(rows["topic"] == "growth") & (rows["num_tasks"] == 5)]
    assert set(growth["a"]) == {"random"}  # the leader of each pair is named first
    best = {b.panel: b for b in best_configs(runs, table)}[PANEL_5X2]
    assert (best.config["sparse_init"], best.config["growth"], best.run["seed"]) == ("uniform", "random", 1)


def test_report_runs_without_torch_and_writes_everything(results: Path, report_run) -> None:
    assert report_run.returncode == 0, report_run.stderr
    out = results / "out"
    assert f"report: {out / 'report.md'}" in report_run.stdout
    assert "31 trials (27 ok, 2 error, 1 stopped, 1 running)" in report_run.stdout
    for name in FIGURES:
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name
    text = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"(figures/{name})" in text
    assert "Trials: 31 (27 ok, 2 error, 1 stopped, 1 running)" in text
    assert "| grid | grid_022 | error |" in text and "RuntimeError: boom" in text
    assert "| grid | grid_024 | running |" in text and "2 of 5" in text
    assert "Over this split's cells, ERK and uniform initialisation are not told apart with 3 seeds" in text
    assert "Each benchmark split is one family" in text
    best_5x2 = text.split(f"### {PANEL_5X2}")[-1]  # the last section of that panel is its best configuration
    assert "**chosen on test ACC: these runs held no validation split" in best_5x2
    # 91.5 and 92.5: mean 92, std 0.71, t(1) 12.706 x 0.5; the other 7 configurations of the panel are untested
    assert "final ACC 92.00 ± 0.71 over 2 run(s); 95% CI 85.65 to 98.35\n" in best_5x2
    assert "Holm over all 28 tested pairs of the split's configurations, which stays valid after choosing the " \
        "best; an open gap calls for seeds, it is no tie): uniform/momentum density 0.2 (+0.00), ERK/random density " \
        "0.2 (-1.00), " in best_5x2
    assert "uniform/random density 0.1 (-21.50)\n- best seed 1" in best_5x2
    assert "**This search selected on test ACC (no validation split)" in text
    assert "cldst train --dataset digits --net mlp --num-classes 10 --num-tasks 5 --num-classes-per-task 2 " \
           "--sparse-init ERK --prune magnitude --growth momentum --density 0.2" in best_5x2
    assert "computed by Optuna get_param_importances" in text


def test_report_tables_on_disk(results: Path, report_run) -> None:
    assert report_run.returncode == 0, report_run.stderr
    folder = results / "out" / "tables"
    csv = pd.read_csv(folder / "summary.csv")
    row = csv[(csv["benchmark"] == "digits") & (csv["split"] == "5x2") & (csv["density"] == 0.2)
              & (csv["sparse_init"] == "uniform") & (csv["growth"] == "random")].iloc[0]
    assert (row["acc_mean"], row["n_ok"]) == (90.0, 2) and row["acc_std"] == pytest.approx(8**0.5)
    assert "| digits | mlp | clean | 2x5 | 10 | 0.1 | ERK | random | 1 | 0 | 0 | 0 | 95.00 ± – |" in \
        (folder / "summary.md").read_text()
    assert "val ACC" not in (folder / "summary.md").read_text()  # no run held a validation split
    found = pd.read_csv(folder / "findings.csv")
    assert list(found.columns[:19]) == [
        "benchmark", "net", "protocol", "num_tasks", "classes_per_task", "update_frequency", "topic", "density",
        "sparse_init", "a", "b", "n_pairs", "diff", "ci_low", "ci_high", "p_value", "p_adjusted", "mde", "verdict"]
    assert list(found.columns[19:25]) == ["panel", "n_run_pairs", "n_unmatched", "sd", "family", "family_size"]
    assert found["verdict"].value_counts().to_dict() == {"not established": 7, "not tested": 4, "real": 1}
    assert summary_ci(csv) == pytest.approx((90.0 - 12.7062 * 2, 90.0 + 12.7062 * 2), abs=1e-3)
    for slug in ("digits_mlp_5x2_uf10_clean", "digits_mlp_2x5_uf10_clean", "synthetic_mlp_5x2_uf5_clean"):
        assert (folder / f"comparison_{slug}.csv").stat().st_size > 0
        assert (folder / f"comparison_{slug}.md").stat().st_size > 0


def summary_ci(csv: pd.DataFrame) -> tuple[float, float]:
    """The 95% interval of uniform/random at density 0.2 (ACC 88 and 92: mean 90, std 2.83, t(1) 12.706)."""
    row = csv[(csv["split"] == "5x2") & (csv["density"] == 0.2) & (csv["sparse_init"] == "uniform")
              & (csv["growth"] == "random") & (csv["benchmark"] == "digits")].iloc[0]
    return row["acc_ci_low"], row["acc_ci_high"]


@pytest.mark.parametrize("argv", [["{missing}"], ["{empty}"], ["{no_results}"], ["{grid}", "--bogus"], []])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, results: Path, argv: list[str],
                                                capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty" / "exp" / "runs").mkdir(parents=True)
    (tmp_path / "no_results" / "notes").mkdir(parents=True)
    places = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "no_results": tmp_path / "no_results",
              "grid": results / "grid"}
    out = tmp_path / "out"
    assert main([a.format(**places) for a in argv] + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("analysis.report: error: ") and err.count("\n") == 1
    assert not out.exists()


def test_unreadable_files_are_skipped_and_listed(tmp_path: Path) -> None:
    writer = Writer(tmp_path, "small")
    writer.trial(config(seed=0), 80.0)
    writer.trial(config(seed=1), 82.0)
    runs_dir = tmp_path / "small" / "runs"
    (runs_dir / "notes.txt").write_text("stray")
    (runs_dir / "part-truncated.parquet").write_bytes((runs_dir / "part-small_000.parquet").read_bytes()[:100])
    old = pq.read_table(runs_dir / "part-small_001.parquet")
    old = old.set_column(0, "schema_version", pa.array([0] * len(old), pa.int32()))
    pq.write_table(old, runs_dir / "part-old.parquet")
    with pytest.warns(UserWarning, match="3 unreadable result file"):
        assert len(analysis.load(tmp_path)) == 2
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Unreadable result files left out (3)" in text
    assert "schema_version [0], but this cldst reads versions 1 to" in text
    assert "stray file" in text and "part-truncated.parquet" in text


def test_only_older_schema_files_are_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Writer(tmp_path, "old").trial(config(), 80.0)
    for kind in ("tasks", "runs"):
        path = tmp_path / "old" / kind / "part-old_000.parquet"
        table = pq.read_table(path)
        pq.write_table(table.set_column(0, "schema_version", pa.array([0] * len(table), pa.int32())), path)
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"analysis.report: error: found 2 result file(s) under {tmp_path} but could read none: ")
    assert "schema_version [0], but this cldst reads versions 1 to" in err and err.count("\n") == 1
    assert not (tmp_path / "report").exists()


def test_sweep_still_running_gives_a_report(tmp_path: Path) -> None:
    writer = Writer(tmp_path, "live")
    writer.trial(config(seed=0), acc=None, status=None, tasks_done=2)
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Trials: 1 (0 ok, 0 error, 0 stopped, 1 running)" in text
    assert "| live | live_000 | running | digits mlp 5x2 ERK/random density 0.1 seed 0 | 2 of 5 | 50.00 | – |" in text
    assert "(not drawn: no finished run yet)" in text
    assert "None yet: no finished (`ok`) run." in text


def test_search_history_and_importances(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (found,) = search.searches(analysis.load_all(results))
    steps = search.history(found)
    assert steps["acc"].tolist()[:5] == [acc for _d, _g, acc in SEARCH]
    assert steps["best_so_far"].tolist() == [60.0, 70.0, 70.0, 80.0, 80.0, 80.0]
    assert steps["status"].tolist()[-1] == "error"
    pytest.importorskip("optuna")
    ranked = search.importances(found)
    assert ranked.by_optuna and set(ranked.values.index) == {"density", "growth"}
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if Optuna were not installed
    fallback = search.importances(found)
    assert not fallback.by_optuna and fallback.source.startswith("fallback") and "Optuna not used" in fallback.source
    assert fallback.values.to_dict() == {"density": 25.0, "growth": 12.5}  # means 50/62.5/75 and 60/72.5


def test_default_output_folder(tmp_path: Path) -> None:
    assert default_out([tmp_path / "exp"]) == tmp_path / "exp" / "report"
    assert default_out([tmp_path / "a", tmp_path / "b"]) == tmp_path.resolve() / "report"


def test_the_best_configuration_is_chosen_on_validation_with_test_beside_it(tmp_path: Path) -> None:
    writer = Writer(tmp_path, "val")
    for seed in (0, 1):  # momentum: the better test ACC, random: the better validation ACC
        writer.trial(config(growth="momentum", seed=seed, val_fraction=0.1), 90.0 + seed, val=80.0 + seed)
        writer.trial(config(growth="random", seed=seed, val_fraction=0.1), 85.0 + seed, val=88.0 - seed)
    runs = analysis.load(tmp_path)
    table = tables.summary(runs)
    (best,) = best_configs(runs, table)
    assert best.on_validation and best.config["growth"] == "random"
    assert (best.val_mean, best.acc_mean, best.run["seed"]) == (87.5, 85.5, 0)  # its best seed by validation too
    assert "| ERK | momentum | 90.50 ± 0.71 (n=2; val 80.50 ± 0.71) |" in tables.comparison_markdown(table)
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert ("- chosen on final validation ACC 87.50 ± 0.71; its final test ACC 85.50 ± 0.71 over 2 run(s); 95% CI "
            "79.15 to 91.85") in text
    # validation 88, 87 against 80, 81: paired differences 8 and 6, t-test p = 0.09 on one degree of freedom
    assert "not told apart from it on validation ACC with these seeds, each with its mean gap to it (seed-paired; " \
           "Holm over all 1 tested pairs of the split's configurations, which stays valid after choosing the best; " \
           "an open gap calls for seeds, it is no tie): ERK/momentum density 0.1 (-7.00)" in text
    assert "val ACC 88.00, test ACC 85.00" in text and "chosen on test ACC" not in text
    assert "| val ACC |" in (tmp_path / "report" / "tables" / "summary.md").read_text().splitlines()[0]


def test_protocols_never_share_a_mean(tmp_path: Path) -> None:
    writer = Writer(tmp_path, "protocols")
    for protocol, acc in (("clean", 90.0), ("paper", 70.0)):
        for seed in (0, 1):
            writer.trial(config(seed=seed, protocol=protocol), acc + seed)
    table = tables.summary(analysis.load(tmp_path))
    assert sorted(zip(table["protocol"], table["acc_mean"], table["n_ok"], strict=True)) == [
        ("clean", 90.5, 2), ("paper", 70.5, 2)]
    assert [title.rsplit(" · ", 1)[1] for title, _slug, _rows in tables.panels(table)] == [
        "protocol clean", "protocol paper"]


@pytest.mark.parametrize("kinds", [("tasks", "runs"), ("runs",)])
def test_a_design_version_1_folder_gives_a_report(tmp_path: Path, kinds: tuple[str, ...]) -> None:
    """Files holding exactly the version-1 columns (no schema_version, config_json, node, tasks_done,
    protocol or validation columns): the report reads what it uses and leaves the rest out."""
    from cldst import results as cldst_results

    writer = Writer(tmp_path, "v1")
    for seed in (0, 1):
        writer.trial(config(seed=seed), 80.0 + seed)
    writer.trial(config(seed=2), 50.0, status="stopped", tasks_done=2)
    for kind in ("tasks", "runs"):
        for path in (tmp_path / "v1" / kind).glob("*.parquet"):
            if kind in kinds:
                pq.write_table(pq.read_table(path).select(cldst_results.REQUIRED[kind]), path)
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "protocol unrecorded" in text and "**chosen on test ACC" in text
    assert "final ACC 80.50 ± 0.71 over 2 run(s)" in text
    assert "| v1 | v1_002 | stopped | digits mlp 5x2 ERK/random density 0.1 seed 2 | " in text


def test_a_folder_with_known_effects_gives_exactly_the_expected_real_verdicts(tmp_path: Path) -> None:
    """8 seeds with shared offsets; true effects: ERK +4 at density 0.1 only, momentum +5 over random and gradient
    everywhere, random = gradient. Written through cldst.results, read back by the report."""
    rng = np.random.default_rng(3)
    writer = Writer(tmp_path, "known")
    for seed in range(8):
        offset = rng.normal(0.0, 3.0)
        for density, init, growth in itertools.product((0.1, 0.2), ("ERK", "uniform"), ("random", "momentum",
                                                                                        "gradient")):
            effect = 4.0 * (init == "ERK" and density == 0.1) + 5.0 * (growth == "momentum")
            writer.trial(config(density=density, sparse_init=init, growth=growth, seed=seed),
                         70.0 + offset + effect + rng.normal(0.0, 0.4))
    assert main([str(tmp_path / "known"), "--out", str(tmp_path / "out")]) == 0
    rows = pd.read_csv(tmp_path / "out" / "tables" / "findings.csv", keep_default_na=False)
    real = {(r.topic, r.density, r.sparse_init, r.a, r.b) for r in rows.itertuples() if r.verdict == "real"}
    assert real == {("init", "", "", "ERK", "uniform"), ("init cell", "0.1", "", "ERK", "uniform"),
                    ("growth", "", "", "momentum", "random"),
                    ("growth", "", "", "momentum", "gradient")} | {
        ("growth cell", str(density), init, "momentum", other)
        for density in (0.1, 0.2) for init in ("ERK", "uniform") for other in ("random", "gradient")}
    assert len(rows) == 1 + 2 + 3 + 3 * 4 and set(rows["n_pairs"]) == {8}
    # the cells of random - gradient are gated shut: their main effect is not real
    shut = rows[(rows["topic"] == "growth cell") & (rows["a"].isin(["random", "gradient"]))]
    assert len(shut) == 4 and set(shut["verdict"]) == {"not established"} and set(shut["p_adjusted"]) == {1.0}
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Over this split's cells, ERK initialisation beats uniform by " in text
    assert "At density 0.1, ERK initialisation beats uniform by " in text
    assert "At density 0.2, ERK" not in text  # its cell is not real: only the main sentence's "by density" names it
    for density, init in itertools.product((0.1, 0.2), ("ERK", "uniform")):
        assert f"With {init} initialisation at density {density:g}, momentum growth beats random by " in text
    assert "Over this split's cells, momentum growth wins (" in text


def adaptive_experiment(root: Path, seed: int, members: list[tuple[float, float]], weight: float = 0.0) -> None:
    """One sweeps/adaptive.py experiment (one seed): its sweep.json and its members' (test ACC, val ACC)."""
    name = f"pbt_s{seed}_w{weight:g}"
    writer = Writer(root, name)
    for number, (acc, val) in enumerate(members):
        writer.trial(config(growth=("random", "momentum")[number % 2], seed=seed, val_fraction=0.1), acc, val=val)
    (root / name / "sweep.json").write_text(json.dumps({
        "script": "adaptive", "fixed": {"benchmark": "digits", "net": "mlp", "seed": seed, "val_fraction": 0.1},
        "choices": {"sparse_init": ["ERK"], "growth": ["random", "momentum"], "density": [0.1, 0.2],
                    "death_rate": [0.5], "update_frequency": [10]},
        "population": len(members), "capacity_weight": weight}))


def test_adaptive_verdicts_are_seed_paired_tests(tmp_path: Path) -> None:
    grid = Writer(tmp_path, "grid")
    luck = [0.0, 0.5, -0.2]
    for seed in range(3):  # (a) picks momentum at density 0.1 (validation 90), test ACC 84 + seed
        for growth, density, acc, val in (("random", 0.1, 80, 85), ("momentum", 0.1, 84, 90),
                                          ("random", 0.2, 82, 86), ("momentum", 0.2, 83, 87)):
            grid.trial(config(growth=growth, density=density, seed=seed, val_fraction=0.1), acc + seed, val=val)
        adaptive_experiment(tmp_path, seed, [(86.0 + seed + luck[seed], 95.0), (70.0, 60.0)])
        adaptive_experiment(tmp_path, seed, [(85.0 + seed, 96.0), (70.0, 60.0)], weight=0.1)
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    rows = pd.read_csv(tmp_path / "out" / "tables" / "findings.csv").query("topic == 'adaptive'").set_index(["a", "b"])
    static = rows[rows["panel"].str.endswith("capacity weight 0")].loc[("PBT (best member)",
                                                                         "(a) best static, on validation")]
    expected = scipy.stats.ttest_1samp([2.0 + x for x in luck], 0.0)  # PBT - (a), per seed
    assert (static["n_pairs"], static["diff"]) == (3, pytest.approx(2.1))
    assert static["p_value"] == pytest.approx(expected.pvalue)
    weights = rows.loc[("PBT, capacity weight 0.1", "PBT, capacity weight 0")]
    assert weights["diff"] == pytest.approx(-1.1) and weights["n_pairs"] == 3
    text = (tmp_path / "out" / "report.md").read_text()
    assert ("capacity weight 0: PBT (best member) - (a) best static, on validation = +2.10 test ACC points "
            "(95% CI") in text


def test_a_left_out_trials_last_avg_acc_skips_a_task_it_discarded(tmp_path: Path) -> None:
    """A PBT member stopped after an exploit threw away its task 2: where it got to is its task 1, not the model
    it dropped."""
    writer = Writer(tmp_path, "pbt")
    writer.trial(config(seed=0), 80.0)
    member = writer.trial(config(seed=1), 60.0, status="stopped", tasks_done=3)
    path = tmp_path / "pbt" / "tasks" / f"part-{member}.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[2].update(discarded=True, avg_acc=1.0)
    rows[1].update(avg_acc=42.0)
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    assert main([str(tmp_path / "pbt"), "--out", str(tmp_path / "out")]) == 0
    left_out = (tmp_path / "out" / "report.md").read_text().split("Trials left out of the means:")[1]
    row = next(line for line in left_out.splitlines() if member in line)
    assert "| 3 of 5 | 42.00 |" in row


def test_compared_splits_keep_every_held_setting_and_come_sorted_by_it(tmp_path: Path) -> None:
    """Prune criteria compared, crossed with lr and class_order_seed (unset or 1), the runs written in no sorted
    order: each of the 4 splits is a family of its own, those with no class_order_seed (null) among them, in the
    order of their held settings, each named by them as JSON with sorted keys (the runs' columns hold prune, lr,
    class_order_seed in that order)."""
    writer = Writer(tmp_path, "crossed")
    for seed, lr, order, init, prune in itertools.product((0, 1), (0.01, 0.003), (1, None), ("ERK", "uniform"),
                                                          ("magnitude", "SET")):
        cfg = dict(config(sparse_init=init, seed=seed), prune=prune, lr=lr, class_order_seed=order)
        writer.trial(cfg, 70.0 + 3.0 * (prune == "magnitude") + seed)
    runs = analysis.load(tmp_path / "crossed")
    rows = comparisons(runs, tables.summary(runs))
    compared = rows[rows["topic"] == "prune"]
    assert list(compared["settings"]) == ['{"class_order_seed": 1.0, "lr": 0.003}',
                                          '{"class_order_seed": null, "lr": 0.003}',
                                          '{"class_order_seed": 1.0, "lr": 0.01}',
                                          '{"class_order_seed": null, "lr": 0.01}']
    assert compared["panel"].str.endswith(" · prune compared").all() and compared["panel"].is_unique
    assert '{"class_order_seed": null, "lr": 0.01, "prune": "SET"}' in set(rows["settings"])


def test_a_compared_split_without_claims_leaves_every_other_finding(tmp_path: Path) -> None:
    """Prune criteria compared on 4 tasks and on 5; on 4 every run's growth varies over its tasks, so that split
    has no cell and no claim (it comes first). The 5-task split's comparison is still found, beside the findings of
    every panel."""
    writer = Writer(tmp_path, "crossed")
    for seed, tasks, init, prune in itertools.product((0, 1), (5, 4), ("ERK", "uniform"), ("magnitude", "SET")):
        cfg = dict(config(num_tasks=tasks, sparse_init=init, seed=seed), prune=prune)
        if tasks == 4:
            cfg["growth"] = ("random",) * 3 + ("momentum",)
        writer.trial(cfg, 70.0 + 3.0 * (prune == "magnitude") + seed)
    runs = analysis.load(tmp_path / "crossed")
    table = tables.summary(runs)
    found = sentences(comparisons(runs, table), table, runs)
    where = {(f.panel.split(" · ")[2], f.panel.endswith("prune compared"), f.topic) for f in found}
    assert where == {("4 tasks x 2 classes", False, "bwt"),
                     *itertools.product(["5 tasks x 2 classes"], [False], ["family", "init", "bwt"]),
                     *itertools.product(["5 tasks x 2 classes"], [True], ["family", "prune"])}


def test_a_crossed_prune_criterion_is_a_family_of_its_own_and_its_levels_are_never_averaged(tmp_path: Path) -> None:
    """6 seeds of 2 inits x 2 growth criteria x 2 densities x 2 prune criteria; true effect: magnitude +3 over SET
    everywhere, nothing else. Each prune criterion keeps its own panel (tables, init and growth families), and the
    prune criteria are compared in a family of their own, paired on (seed, init, growth, density)."""
    rng = np.random.default_rng(11)
    writer = Writer(tmp_path, "prune")
    for seed in range(6):
        offset = rng.normal(0.0, 3.0)
        for density, init, growth, prune in itertools.product((0.1, 0.2), ("ERK", "uniform"), ("random", "momentum"),
                                                              ("magnitude", "SET")):
            cfg = dict(config(density=density, sparse_init=init, growth=growth, seed=seed), prune=prune)
            writer.trial(cfg, 70.0 + offset + 3.0 * (prune == "magnitude") + rng.normal(0.0, 0.3))
    assert main([str(tmp_path / "prune"), "--out", str(tmp_path / "out")]) == 0
    rows = pd.read_csv(tmp_path / "out" / "tables" / "findings.csv", keep_default_na=False)
    compared = rows[rows["panel"].str.endswith("· prune compared")]
    assert set(compared["topic"]) == {"prune", "prune cell"} and set(compared["family_size"]) == {1 + 8}
    (main_effect,) = compared[compared["topic"] == "prune"].itertuples()
    assert (main_effect.a, main_effect.b, main_effect.verdict, main_effect.n_pairs) == ("magnitude", "SET", "real", 6)
    assert main_effect.diff == pytest.approx(3.0, abs=0.3)
    cells = compared[compared["topic"] == "prune cell"]
    where = zip(cells["sparse_init"], cells["growth"], cells["density"].astype(float), strict=True)
    assert sorted(where) == sorted(itertools.product(("ERK", "uniform"), ("momentum", "random"), (0.1, 0.2)))
    assert set(cells["verdict"]) == {"real"}
    # each prune criterion is a panel of its own: its init and growth claims pair runs of that criterion only
    panels = {panel for panel in rows["panel"] if not panel.endswith("compared")}
    assert panels == {f"digits · mlp · 5 tasks x 2 classes · update every 10 · protocol clean · prune={prune}"
                      for prune in ("SET", "magnitude")}
    assert set(rows.loc[rows["panel"].isin(panels), "verdict"]) == {"not established"}  # nothing but prune differs
    assert set(rows.loc[rows["panel"].isin(panels), "settings"]) == {'{"prune": "SET"}', '{"prune": "magnitude"}'}
    assert set(compared["settings"]) == {"{}"}  # the split's other settings: none beyond the context columns
    summary = pd.read_csv(tmp_path / "out" / "tables" / "summary.csv")
    assert len(summary) == 16 and set(summary.groupby("prune")["n_ok"].sum()) == {6 * 8}
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Over this split's cells, magnitude pruning wins (" in text
    assert "With ERK initialisation and momentum growth at density 0.1, magnitude pruning beats SET by " in text
