"""Sweep options that print or refuse before Ray starts: no Ray here, each test well under a second. Bad option
values (exit 2, one line, nothing written) are tests/test_bad_input.py."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps import experiment, full_grid, search  # noqa: E402

pytestmark = pytest.mark.timeout(30)


def test_paper_grid_dry_run_prints_144_trials_per_seed(capsys):
    assert full_grid.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "paper-cifar100: 144 trials per seed x 1 seed = 144 trials" in out
    assert "mobilenetv2" in out and "100 epochs per task" in out
    assert full_grid.main(["--dry-run", "--preset", "paper-miniimagenet", "--seeds", "0", "1", "2"]) == 0
    assert "144 trials per seed x 3 seeds = 432 trials (miniimagenet, resnet18" in capsys.readouterr().out


def test_quick_preset_and_narrowed_axes(capsys):
    assert full_grid.main(["--dry-run", "--preset", "quick"]) == 0
    assert "quick: 24 trials per seed" in capsys.readouterr().out
    assert full_grid.main(["--dry-run", "--growth", "momentum", "gradient", "--density", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "paper-cifar100: 24 trials per seed" in out
    assert "growth: momentum gradient" in out and "density: 0.1\n" in out


def test_grid_points_cross_every_axis():
    points = full_grid.grid({"benchmark": "digits"}, {"growth": ["random", "momentum"], "density": [0.1, 0.2, 0.3]})
    assert len(points) == 6 and {p["benchmark"] for p in points} == {"digits"}
    assert {(p["growth"], p["density"]) for p in points} == {(g, d) for g in ("random", "momentum")
                                                             for d in (0.1, 0.2, 0.3)}


def test_search_dry_run_describes_the_space(capsys):
    assert search.main(["--preset", "quick", "--dry-run", "--density-range", "0.01", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "density [0.01, 0.3] (log)" in out and "5 tasks" in out and "tpe" in out


def test_default_paths_are_absolute_and_named_after_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = experiment.from_args(full_grid.build_parser().parse_args(["--preset", "quick"]))
    assert exp.name == "quick"
    assert exp.results_dir == tmp_path / "results" / "quick"
    assert exp.storage == str(tmp_path / "results" / "ray")
    assert exp.tune_path == str(tmp_path / "results" / "ray" / "quick")


def test_another_sweep_under_the_same_name_is_refused(tmp_path, capsys):
    exp = experiment.Experiment("e", tmp_path / "e", str(tmp_path / "ray"))
    experiment.claim(exp, {"axes": {"growth": ["random"]}})
    experiment.claim(exp, {"axes": {"growth": ["random"]}})  # the same sweep: a resume
    with pytest.raises(SystemExit) as info:
        experiment.claim(exp, {"axes": {"growth": ["momentum"]}})
    assert info.value.code == 2
    assert "holds another sweep named 'e'" in capsys.readouterr().err


def test_results_without_their_ray_state_are_not_overwritten(tmp_path, capsys):
    exp = experiment.Experiment("e", tmp_path / "e", str(tmp_path / "elsewhere"))
    (exp.results_dir / "runs").mkdir(parents=True)
    with pytest.raises(SystemExit):
        experiment.claim(exp, {"axes": {}})
    assert "no Ray Tune state to resume them from" in capsys.readouterr().err


def test_the_summary_ranks_tied_trials_as_the_progress_view_names_the_best(tmp_path, capsys):
    from sweeps import common, progress
    from tests.test_compaction import trial

    exp = experiment.Experiment("ties", tmp_path / "ties", str(tmp_path / "ray"))
    for trial_id in ("t1", "t3", "t2"):  # one ACC for all three
        trial(exp.results_dir, trial_id)
    assert common.summarize(exp, expected=3) == 0
    listed = [line.rsplit("(", 1)[1].rstrip(")") for line in capsys.readouterr().out.splitlines()
              if line.startswith("  ACC")]
    assert listed == ["t3", "t2", "t1"]
    runs = [(trial_id, {"avg_acc": 89.0}) for trial_id in ("t1", "t3", "t2")]
    assert progress.best_acc(runs)[2] == listed[0]


def test_the_summary_ranks_configurations_by_their_mean_over_seeds_once_one_has_several(tmp_path, capsys):
    from cldst import results
    from cldst.config import RunConfig
    from sweeps import common

    exp = experiment.Experiment("seeds", tmp_path / "seeds", str(tmp_path / "ray"))
    # density 0.2 has the luckiest single run (99) but the lower mean over its two seeds (80 against 90)
    for trial_id, density, seed, val in (("a", 0.2, 0, 99.0), ("b", 0.2, 1, 61.0), ("c", 0.1, 0, 91.0),
                                         ("d", 0.1, 1, 89.0), ("e", 0.05, 0, 50.0)):
        config = RunConfig.from_dict({"benchmark": "digits", "net": "mlp", "num_tasks": 2, "val_fraction": 0.1,
                                      "density": density, "seed": seed}).resolve().to_dict()
        common_columns = results.common_columns(config, "seeds", trial_id, "node")
        rows = [{"acc": [val + 1] * (t + 1), "fwt_acc": [], "val_acc": [val] * (t + 1)} for t in range(2)]
        results.write_part(exp.results_dir, "runs", trial_id, [results.run_row(common_columns, rows, "ok", None, 1.0)])
    assert common.summarize(exp, expected=5) == 0
    out = capsys.readouterr().out
    assert "top configurations by mean final validation ACC over seeds (test ACC beside it):" in out
    listed = [line.split() for line in out.splitlines() if line.startswith("  val ACC")]
    assert [(row[2], row[7], row[10]) for row in listed] == [
        ("90.00", "n=2", "density=0.1"), ("80.00", "n=2", "density=0.2"), ("50.00", "n=1", "density=0.05")]
