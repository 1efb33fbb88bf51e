"""analysis/: tidy loading, exact tables, findings that follow the data, the report end to end.

The fixture (tests/analysis_fixture.py) writes Parquet with cldst's own writer: known ACC/BWT
per seed (GRID), a failed, a stopped and a still-running trial, and an Optuna search.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from analysis_fixture import GRID, SEARCH, Writer, build_grid, build_search, config

import analysis
from analysis import search, tables
from analysis.findings import best_configs, findings, verdict
from analysis.report import default_out, main

REPO = Path(__file__).resolve().parents[1]

FIGURES = ["acc_vs_density.png", "accuracy_matrix.png", "avg_acc_over_tasks.png", "capacity_over_tasks.png",
           "search_history_search.png", "param_importance_search.png"]
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


def test_findings_follow_the_numbers(results: Path) -> None:
    runs, table = grid_summary(results)
    found = findings(runs, table)
    assert texts(found, PANEL_5X2, "init") == [
        "At density 0.1, ERK initialisation beats uniform by 11.00 points of final ACC (84.00 vs 73.00, mean over "
        "the growth criteria momentum, random; ERK is ahead with 2 of 2): larger than the seed spread (2.00).",
        "At density 0.2, ERK initialisation beats uniform by 0.50 points of final ACC (91.50 vs 91.00, mean over "
        "the growth criteria momentum, random; ERK is ahead with 1 of 2): within noise (seed spread 2.83)."]
    assert texts(found, PANEL_5X2, "growth") == [
        "With ERK initialisation at density 0.1, momentum growth wins: 86.00 ± 1.00 (n=3) vs 82.00 ± 2.00 (n=3) "
        "for random, 4.00 points ahead: larger than the seed spread (2.00).",
        "With uniform initialisation at density 0.1, momentum growth wins: 75.00 ± 1.00 (n=3) vs 71.00 ± 1.00 "
        "(n=3) for random, 4.00 points ahead: larger than the seed spread (1.00).",
        "With ERK initialisation at density 0.2, momentum growth wins: 92.00 ± 0.71 (n=2) vs 91.00 ± 1.41 (n=2) "
        "for random, 1.00 points ahead: within noise (seed spread 1.41).",
        "With uniform initialisation at density 0.2, momentum growth wins: 92.00 ± 1.41 (n=2) vs 90.00 ± 2.83 "
        "(n=2) for random, 2.00 points ahead: within noise (seed spread 2.83)."]
    assert texts(found, PANEL_2X5, "init") == [
        "At density 0.1, ERK initialisation beats uniform by 2.00 points of final ACC (95.00 vs 93.00, with random "
        "growth): the seed spread is unknown (single seed), so this may be noise."]
    assert texts(found, PANEL_2X5, "growth") == []  # one growth criterion: nothing to rank
    assert texts(found, PANEL_5X2, "bwt") == [
        "Backward transfer ranges from -1.50 to 0.00 points over 20 finished runs; 3 of them lost accuracy on "
        "earlier tasks (BWT < 0), which parameter isolation should prevent."]
    assert texts(found, PANEL_2X5, "bwt") == [
        "Backward transfer is 0.00 in all 2 finished runs: no forgetting, as parameter isolation promises."]


def test_findings_flip_with_the_fixture(tmp_path: Path) -> None:
    build_grid(tmp_path, flip=True)
    runs, table = grid_summary(tmp_path)
    found = findings(runs, table)
    init = [f for f in found if f.panel == PANEL_5X2 and f.topic == "init"]
    assert [(f.winner, f.verdict) for f in init] == [("uniform", "real"), ("uniform", "within noise")]
    assert init[0].text.startswith("At density 0.1, uniform initialisation beats ERK by 11.00 points")
    growth = [f for f in found if f.panel == PANEL_5X2 and f.topic == "growth"]
    assert [f.winner for f in growth] == ["random"] * 4
    assert growth[0].text.startswith("With ERK initialisation at density 0.1, random growth wins: 75.00 ± 1.00")
    best = {b.panel: b for b in best_configs(runs, table)}[PANEL_5X2]
    assert (best.config["sparse_init"], best.config["growth"], best.run["seed"]) == ("uniform", "random", 1)


def test_noise_rule() -> None:
    assert verdict(2.5, [1.0, 2.0])[0] == "real"
    assert verdict(2.0, [1.0, 2.0])[0] == "within noise"  # must exceed the spread, not equal it
    assert verdict(9.0, [1.0, float("nan")])[0] == "spread unknown"


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
    assert "At density 0.1, ERK initialisation beats uniform by 11.00 points" in text
    assert "larger than the largest seed-to-seed standard deviation" in text
    best_5x2 = text.split(f"### {PANEL_5X2}")[-1]  # the last section of that panel is its best configuration
    assert "**chosen on test ACC: these runs held no validation split" in best_5x2
    assert "final ACC 92.00 ± 0.71 over 2 run(s)\n- best seed 1" in best_5x2
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
    for slug in ("digits_mlp_5x2_uf10_clean", "digits_mlp_2x5_uf10_clean", "synthetic_mlp_5x2_uf5_clean"):
        assert (folder / f"comparison_{slug}.csv").stat().st_size > 0
        assert (folder / f"comparison_{slug}.md").stat().st_size > 0


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
    assert "- chosen on final validation ACC 87.50 ± 0.71; its final test ACC 85.50 ± 0.71 over 2 run(s)" in text
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
    """Files holding exactly DESIGN.md's version-1 columns (no schema_version, config_json, node, tasks_done,
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
