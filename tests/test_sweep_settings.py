"""Any RunConfig field fixed (--set) or crossed (--grid), from the command line or a TOML file (--config), in the three
sweep scripts; the presets as starting points. In-process dry runs, no Ray, except one quick sweep of the shipped
example that the report reads. Bad input (exit 2, one line, nothing written) is tests/test_bad_input.py."""

import argparse
import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.report import main as report_main  # noqa: E402
from cldst import results  # noqa: E402
from cldst.config import BENCHMARK_CLASSES  # noqa: E402
from sweeps import adaptive, experiment, full_grid, presets, search, settings  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "sweeps"

pytestmark = pytest.mark.timeout(60)


def trial_lines(out: str) -> list[str]:
    listed = out.split("trials (crossed settings", 1)[1].splitlines()[1:]
    return [line for line in listed if line.startswith("  ")]


@pytest.mark.parametrize("field, given, value", [
    ("lr", "0.003", 0.003), ("epochs", "2", 2), ("isolate", "false", False), ("keep_best_epoch", "on", True),
    ("net", "lenet5", "lenet5"), ("class_order_seed", "none", None), ("density", "0.2:0.1", (0.2, 0.1)),
    ("update_frequency", "10:20:30", (10, 20, 30)), ("growth", "random:momentum", ("random", "momentum")),
])
def test_a_value_is_parsed_with_its_fields_type(field, given, value):
    assert settings.parse_value(field, given) == value


def test_set_takes_cldst_trains_commas_and_grid_takes_colons_for_a_schedule():
    args = full_grid.build_parser().parse_args(["--set", "density=0.2,0.1,0.1,0.1,0.1",
                                                "--grid", "growth=random:momentum:random:random:random,momentum"])
    given = settings.from_command_line(args, {})
    assert given.fixed == {"density": (0.2, 0.1, 0.1, 0.1, 0.1)}
    assert given.grid == {"growth": [("random", "momentum", "random", "random", "random"), "momentum"]}


def test_a_layer_replaces_the_fields_it_gives_below_it_fixed_or_crossed():
    below = settings.Settings({"lr": 0.01, "epochs": 3}, {"growth": ["random", "momentum"], "density": [0.1, 0.2]})
    mine = settings.Settings({"growth": "momentum"}, {"lr": [0.1, 0.01], "density": [0.05]})
    merged = mine.over(below)
    assert merged.fixed == {"epochs": 3, "growth": "momentum"}
    assert merged.grid == {"density": [0.05], "lr": [0.1, 0.01]}


def test_the_paper_grid_crossed_with_two_prune_criteria_under_protocol_paper_lists_288_trials_per_seed(capsys):
    argv = ["--preset", "paper-cifar100", "--set", "protocol=paper", "--grid", "prune=magnitude,Taylor_FO", "--dry-run"]
    assert full_grid.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("paper-cifar100: 288 trials per seed x 1 seed = 288 trials (cifar100, mobilenetv2")
    assert "  prune: magnitude Taylor_FO\n" in out
    lines = trial_lines(out)
    assert len(lines) == 288 and all("protocol=paper eval_head=all precision=fp32" in line for line in lines)
    assert sum("prune=Taylor_FO" in line for line in lines) == 144


def test_a_dry_run_lists_each_trial_with_what_differs_from_the_benchmarks_defaults(capsys):
    argv = ["--preset", "quick", "--grid", "lr=0.01,0.003", "--growth", "random", "momentum", "--density", "0.2",
            "--set", "optimizer=sgd", "--seeds", "0", "1", "--dry-run"]
    assert full_grid.main(argv) == 0
    out = capsys.readouterr().out
    assert "quick: 8 trials per seed x 2 seeds = 16 trials" in out and "  lr: 0.01 0.003\n" in out
    lines = trial_lines(out)
    assert len(lines) == 16
    assert lines[0] == ("  1: sparse_init=uniform growth=random density=0.2 update_frequency=10 num_tasks=5 lr=0.01 "
                        "seed=0 optimizer=sgd")


def test_every_benchmark_has_a_preset_that_resolves(capsys):
    covered = {preset.fixed["benchmark"] for preset in presets.PRESETS.values()}
    assert covered == set(BENCHMARK_CLASSES)
    for name in presets.PRESETS:
        assert full_grid.main(["--preset", name, "--dry-run"]) == 0
        assert capsys.readouterr().out.startswith(f"{name}: ")


@pytest.mark.parametrize("example, first_line", [
    ("paper-cifar100.toml", "paper-cifar100: 144 trials per seed x 1 seed = 144 trials (cifar100, mobilenetv2"),
    ("prune-criteria.toml", "paper-cifar100: 36 trials per seed x 1 seed = 36 trials (cifar100, mobilenetv2"),
    ("quick-lr.toml", "quick: 8 trials per seed x 1 seed = 8 trials (digits, mlp"),
])
def test_the_shipped_examples_resolve(example, first_line, capsys):
    assert full_grid.main(["--config", str(EXAMPLES / example), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(first_line)


def test_the_command_line_overrides_the_file(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('preset = "quick"\n[set]\nlr = 0.01\nepochs = 2\n[grid]\ngrowth = ["random", "momentum"]\n'
                     'density = [0.2, 0.1]\n')
    argv = ["--config", str(sweep), "--grid", "lr=0.1,0.05", "--set", "growth=gradient", "--density", "0.05",
            "--dry-run"]
    assert full_grid.main(argv) == 0
    out = capsys.readouterr().out
    assert "quick: 4 trials per seed" in out and "2 epochs per task" in out
    assert "  density: 0.05\n" in out and "  lr: 0.1 0.05\n" in out and "  growth:" not in out
    assert all("growth=gradient" in line for line in trial_lines(out))
    assert full_grid.main(["--config", str(sweep), "--preset", "paper-cifar100", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("paper-cifar100: ")


def test_a_sweep_from_a_file_is_named_after_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = full_grid.build_parser().parse_args(["--config", str(EXAMPLES / "quick-lr.toml")])
    assert experiment.from_args(args).name == "quick-lr"


def test_the_search_takes_grid_as_a_choice_and_set_as_a_fixed_field(capsys):
    argv = ["--preset", "quick", "--grid", "lr=0.01,0.003", "--grid", "prune=magnitude,SET", "--set", "optimizer=sgd",
            "--set", "death_rate=0.3", "--dry-run"]
    assert search.main(argv) == 0
    out = capsys.readouterr().out
    assert "lr {0.01 0.003}, prune {magnitude SET}, density [0.05, 0.2] (log);" in out
    assert "death_rate [" not in out and "optimizer=sgd" in out and "death_rate=0.3" in out


def test_the_search_space_holds_a_crossed_field_as_an_optuna_categorical(monkeypatch, tmp_path):
    import optuna

    seen = {}

    def stop(args, exp, bench, fixed, search_alg, **options):
        seen.update(space=search_alg._space, fixed=fixed)
        raise SystemExit(0)

    monkeypatch.setattr(search.common, "run", stop)
    monkeypatch.setattr(search.common, "start_ray", lambda args: None)
    with pytest.raises(SystemExit):
        search.main(["--preset", "quick", "--grid", "lr=0.01,0.003", "--set", "epochs=1", "--num-samples", "2",
                     "--results", str(tmp_path / "s"), "--storage", str(tmp_path / "ray")])
    assert seen["space"]["lr"] == optuna.distributions.CategoricalDistribution([0.01, 0.003])
    assert seen["fixed"]["epochs"] == 1


def test_the_adaptive_sweep_takes_set_and_no_longer_explores_a_fixed_field(capsys):
    argv = ["--preset", "quick", "--set", "lr=0.003", "--set", "growth=momentum", "--dry-run"]
    assert adaptive.main(argv) == 0
    out = capsys.readouterr().out
    assert "  growth: momentum\n" in out and "lr=0.003" in out
    assert "  density: 0.2 0.1 0.05  (explored)" in out


def test_another_sweep_under_the_same_name_is_refused_naming_what_changed(tmp_path, capsys):
    exp = experiment.Experiment("e", tmp_path / "e", str(tmp_path / "ray"))
    experiment.claim(exp, {"fixed": {"lr": 0.01}, "axes": {"growth": ["random"]}})
    with pytest.raises(SystemExit):
        experiment.claim(exp, {"fixed": {"lr": 0.003}, "axes": {"growth": ["random"], "prune": ["SET"]}})
    err = capsys.readouterr().err
    assert "changed: axes.prune: absent -> ['SET'], fixed.lr: 0.01 -> 0.003;" in err


@pytest.mark.timeout(150)  # two sweeps of 4 small trials on a 2-CPU Ray, and the report
def test_the_quick_example_runs_and_the_report_keeps_its_two_lrs_apart(local_ray, tmp_path, capsys):
    where = ["--results", str(tmp_path / "quick-lr"), "--storage", str(tmp_path / "ray")]
    argv = ["--config", str(EXAMPLES / "quick-lr.toml"), "--set", "sparse_init=ERK", "--epochs", "1",
            "--num-tasks", "2", *where]
    assert full_grid.main(argv) == 0
    assert "4 ok, 0 error, 0 stopped" in capsys.readouterr().out
    runs = results.load(tmp_path / "quick-lr").runs.to_pylist()
    assert sorted((r["lr"], r["growth"]) for r in runs) == sorted(
        (lr, g) for lr in (0.01, 0.003) for g in ("random", "momentum"))
    assert full_grid.main(argv) == 0  # the same sweep again: resumed, nothing reruns
    assert "4 ok, 0 error, 0 stopped, 4 of 4 ended" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        full_grid.main([*argv, "--set", "optimizer=sgd"])
    assert "changed: fixed.optimizer: absent -> 'sgd'" in capsys.readouterr().err
    assert report_main([str(tmp_path / "quick-lr"), "--out", str(tmp_path / "report")]) == 0
    with open(tmp_path / "report" / "tables" / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert sorted((float(row["lr"]), row["growth"]) for row in summary) == sorted(
        (lr, g) for lr in (0.003, 0.01) for g in ("momentum", "random"))
    assert sorted(p.name for p in (tmp_path / "report" / "tables").glob("comparison_*.csv")) == [
        "comparison_digits_mlp_2x5_uf10_clean_lr-0.003.csv", "comparison_digits_mlp_2x5_uf10_clean_lr-0.01.csv"]


def test_settings_parse_without_a_parser_for_the_fields_a_script_lacks():
    args = argparse.Namespace(set_fields=["lr=0.1"], config=None, preset=None)
    assert settings.resolve(args, {}, crossing=False) == settings.Settings({"lr": 0.1}, {})
    assert args.preset == presets.DEFAULT_PRESET
