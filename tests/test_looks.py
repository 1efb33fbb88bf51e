"""analysis/looks.py and `sweeps/full_grid.py --looks`: the grid adds seeds only while a primary claim is open,
stops when every claim is decided, keeps its error over the looks, and its report says what the sweep stopped on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import looks, race_report, stats
from analysis.report import main as report_main
from cldst import results

REPO = Path(__file__).resolve().parents[1]
INITS, GROWTHS = ("ERK", "uniform"), ("random", "momentum")


def panel(rng: np.random.Generator, seeds: int, init: float, growth: float, noise: float = 1.0) -> pd.DataFrame:
    """Runs of a 2 x 2 split (one density) with known effects: ERK ahead by `init`, momentum by `growth`, seed offsets
    shared by every configuration; accuracies on a lattice of 1000 images per task, so the step is tiny."""
    offset = rng.normal(0.0, 3.0, size=seeds)
    rows = []
    for seed in range(seeds):
        for i, g in ((i, g) for i in INITS for g in GROWTHS):
            acc = 80 + offset[seed] + init * (i == "ERK") + growth * (g == "momentum") + rng.normal(0.0, noise)
            acc = round(acc * 10) / 10  # a count of 1000 images
            rows.append({"benchmark": "synthetic", "num_tasks": 2, "density": 0.2, "sparse_init": i, "growth": g,
                         "seed": seed, "acc": acc, "acc_matrix": [[acc, acc]]})
    return pd.DataFrame(rows)


def run(runs: pd.DataFrame, plan: list[int], min_effect: float) -> looks.SequentialLooks:
    ended = np.ones((4, runs["seed"].nunique()), dtype=bool)
    return looks.sequential(runs, ended, list(range(ended.shape[1])), plan, min_effect)


def test_large_effects_are_decided_at_the_first_look_and_the_grid_stops() -> None:
    result = run(panel(np.random.default_rng(0), 8, init=20.0, growth=-15.0), [3, 5, 8], 1.0)
    assert result.finished and len(result.looks) == 1 and result.open == []
    assert result.verdicts == {"tasks 2, init: ERK - uniform": stats.REAL,
                               "tasks 2, growth: momentum - random": stats.REAL}


def test_no_effect_is_decided_smaller_than_the_minimum_effect_once_the_interval_fits() -> None:
    result = run(panel(np.random.default_rng(1), 8, init=0.0, growth=0.0, noise=0.3), [3, 5, 8], 2.0)
    assert result.finished and set(result.verdicts.values()) == {"smaller than 2 points"}
    assert result.looks[-1].seeds < 8  # seeds saved


def test_an_open_claim_runs_every_look_and_a_decided_one_keeps_its_verdict() -> None:
    runs = panel(np.random.default_rng(2), 6, init=25.0, growth=0.8)  # growth near the minimum effect: stays open
    result = run(runs, [3, 6], 1.0)
    assert [look.seeds for look in result.looks] == [3, 6] and result.finished
    assert result.looks[0].decided == {"tasks 2, init: ERK - uniform": stats.REAL}
    assert result.open == ["tasks 2, growth: momentum - random"]
    unfinished = looks.sequential(runs, np.ones((4, 6), dtype=bool) & (np.arange(6) < 4), list(range(6)), [3, 6], 1.0)
    assert not unfinished.finished and unfinished.next_seeds == 6 and unfinished.contenders == [0, 1, 2, 3]


def test_wrong_decisions_over_the_looks_stay_within_alpha() -> None:
    """No init effect (a `real` verdict is wrong) and a growth effect of exactly the minimum effect (a "smaller
    than" verdict is wrong), looks at 3 5 8 seeds: any wrong decision in at most 5% of simulated grids."""
    rng = np.random.default_rng(3)
    wrong = []
    for _ in range(150):
        result = run(panel(rng, 8, init=0.0, growth=1.0, noise=0.7), [3, 5, 8], 1.0)
        verdicts = result.verdicts
        wrong.append(verdicts.get("tasks 2, init: ERK - uniform") == stats.REAL
                     or verdicts.get("tasks 2, growth: momentum - random", "").startswith("smaller"))
    assert np.mean(wrong) <= stats.ALPHA + 4 * (stats.ALPHA * (1 - stats.ALPHA) / 150) ** 0.5


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("looks")
    command = [sys.executable, "sweeps/full_grid.py", "--preset", "quick", "--growth", "random", "momentum",
               "--density", "0.2", "--looks", "2", "3", "--min-effect", "50", "--name", "looks",
               "--results", str(root / "results")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    return root, done


def test_the_grid_stops_when_every_claim_is_decided_and_its_report_agrees(stopped) -> None:
    root, done = stopped
    assert done.returncode == 0, done.stderr[-2000:]
    assert "look 1/2 at 2 seeds" in done.stdout and "look 2/2" not in done.stdout
    assert "runs 8 of the fixed design's 12, 4 saved" in done.stdout
    spec = json.loads((root / "results" / "sweep.json").read_text())
    assert (spec["looks"], spec["min_effect"], spec["seeds"], spec["metric"]) == ([2, 3], 50.0, [0, 1, 2], "val_acc")
    assert report_main([str(root / "results"), "--out", str(root / "report")]) == 0
    text = (root / "report" / "report.md").read_text()
    section = text.split("## Sequential looks: looks")[1]
    for claim in ("tasks 5, init: ERK - uniform", "tasks 5, growth: momentum - random"):
        assert f"  {claim}: smaller than 50 points" in done.stdout
        assert f"| {claim} | smaller than 50 points |" in section
    rows = race_report.outcomes(results.load(root / "results").runs.to_pylist(), race_report.Plan.from_sweep(spec),
                                value="acc")
    assert rows.ended == 8 and (~np.isnan(rows.val[:, :2])).all()


def test_a_rerun_of_a_stopped_grid_runs_nothing_new(stopped) -> None:
    root, _ = stopped
    again = subprocess.run([sys.executable, "sweeps/full_grid.py", "--preset", "quick", "--growth", "random",
                            "momentum", "--density", "0.2", "--looks", "2", "3", "--min-effect", "50", "--name",
                            "looks", "--results", str(root / "results")], cwd=REPO, capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "runs 8 of the fixed design's 12, 4 saved" in again.stdout
    assert len(results.load(root / "results").runs) == 8


@pytest.mark.parametrize(("extra", "message"), [
    (["--looks", "3", "2"], "--looks: looks must increase"),
    (["--looks", "1", "3"], "--looks: a look needs at least 2 seeds"),
    (["--looks", "2", "4", "--seeds", "0", "1"], "--seeds: not with --looks"),
    (["--looks", "2", "4", "--min-effect", "0"], "--min-effect: must be above 0 points"),
    (["--min-effect", "1"], "--min-effect: only with --looks")])
def test_bad_looks_are_one_line_and_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "sweeps/full_grid.py", "--preset", "quick", "--results",
                           str(tmp_path / "r"), *extra], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "r").exists()
