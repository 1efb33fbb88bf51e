"""sweeps/race.py end to end on a local Ray with 2 CPUs: a small race of the quick preset (4 configurations, 1 epoch,
2 tasks) that drops the configurations at chance; its Parquet; a rerun that does nothing; a driver killed mid-race
and rerun; a search's best raced on the seeds the search did not use; bad input refused before Ray starts."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import driver_env

from analysis import race_report
from cldst import results
from cldst.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeps import race  # noqa: E402

pytestmark = pytest.mark.timeout(240)
# density 0.005 learns nothing in 1 epoch (chance, ~20% validation ACC against ~80%): those leave at the first look
NARROW = ["--preset", "quick", "--epochs", "1", "--num-tasks", "2", "--growth", "random", "--density", "0.2", "0.005",
          "--looks", "3", "4", "--progress-every", "600"]


def where(tmp_path: Path, name: str) -> list[str]:
    return ["--name", name, "--results", str(tmp_path / name), "--storage", str(tmp_path / "ray")]


def ended(root: Path) -> list[dict]:
    try:
        return results.load(root, on_bad="skip").runs.to_pylist()
    except results.ResultsError:
        return []


def per_run(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Runs rows by (configuration, seed), leaving out the rows of trials a driver lost."""
    out: dict[tuple, list[dict]] = {}
    for row in rows:
        if not (row["error"] or "").startswith(race_report.LOST_PREFIX):
            out.setdefault((race_report.key(json.loads(row["config_json"])), row["seed"]), []).append(row)
    return out


def test_a_race_drops_the_configurations_at_chance_writes_one_row_per_run_and_a_rerun_does_nothing(
        local_ray, tmp_path, capsys):
    argv = [*NARROW, *where(tmp_path, "race")]
    assert race.main(argv) == 0
    out = capsys.readouterr().out
    assert "look 1/2 at 3 seeds" in out and "runs so far 12 of the fixed design's 16" in out
    assert "declared best: " in out or "in contention after the last look" in out
    runs = ended(tmp_path / "race")
    assert 12 <= len(runs) < 16 and all(r["status"] == "ok" for r in runs)
    assert all(len(rows) == 1 for rows in per_run(runs).values())  # one row per (configuration, seed)
    assert {r["density"] for r in runs if r["seed"] == 3} == {0.2}  # only the 0.2 configurations ran a 4th seed
    assert all(r["val_fraction"] == 0.1 for r in runs)
    assert "top configurations by mean final validation ACC over seeds" in out
    loaded = results.load(tmp_path / "race").runs
    assert race.main(argv) == 0  # the same command again: nothing new runs
    assert results.load(tmp_path / "race").runs.equals(loaded)


def test_a_race_killed_mid_race_resumes_without_rerunning_a_trial(local_ray, tmp_path):
    argv = [*NARROW, *where(tmp_path, "killed"), "--max-concurrent", "1"]
    driver = subprocess.Popen([sys.executable, str(REPO / "sweeps" / "race.py"), *argv], cwd=tmp_path,
                              env=driver_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, runs_dir = time.monotonic() + 150, tmp_path / "killed" / "runs"
    while len(list(runs_dir.glob("part-*.parquet"))) < 5 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the next trial's first task
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    before = {r["trial_id"]: r for r in ended(tmp_path / "killed")}
    assert 5 <= len(before) < 12, len(before)

    assert race.main(argv) == 0
    runs = ended(tmp_path / "killed")
    for trial_id, row in before.items():  # the runs that had ended were not rerun
        assert [r["created_at"] for r in runs if r["trial_id"] == trial_id] == [row["created_at"]]
    by_run = per_run(runs)
    assert all([r["status"] for r in rows] == ["ok"] for rows in by_run.values())  # no run twice
    assert 12 <= len(by_run) < 16
    tasks = results.load(tmp_path / "killed").tasks.to_pylist()
    assert len({(t["trial_id"], t["task"]) for t in tasks}) == len(tasks)  # no task row twice


def write_search(folder: Path, rows: list[tuple[float, int, str, float | None]]) -> None:
    """A finished search's runs rows: (density, seed, status, final validation ACC)."""
    for k, (density, seed, status, val) in enumerate(rows):
        config = RunConfig.from_dict({"benchmark": "digits", "net": "mlp", "epochs": 1, "num_tasks": 2,
                                      "val_fraction": 0.1, "density": density, "seed": seed}).resolve().to_dict()
        common = results.common_columns(config, "search", f"s{k}", "node")
        tasks = [] if val is None else [{"acc": [val] * (t + 1), "fwt_acc": [], "val_acc": [val] * (t + 1)}
                                        for t in range(2)]
        results.write_part(folder, "runs", f"s{k}", [results.run_row(common, tasks, status, None, 1.0)])


def test_a_searchs_best_race_on_the_seeds_the_search_did_not_use(local_ray, tmp_path, capsys):
    write_search(tmp_path / "search", [(0.2, 0, "ok", 80.0), (0.1, 0, "ok", 85.0), (0.05, 2, "ok", 70.0),
                                       (0.2, 2, "ok", 79.0), (0.02, 0, "stopped", None)])
    argv = ["--from", str(tmp_path / "search"), "--top", "2", "--looks", "2", "3", "--progress-every", "600",
            *where(tmp_path, "confirm")]
    assert race.main(argv) == 0
    assert "race of the 2 best of" in capsys.readouterr().out
    runs = ended(tmp_path / "confirm")
    assert {r["density"] for r in runs} == {0.1, 0.2}  # the two best by validation ACC
    assert {r["seed"] for r in runs} <= {1, 3, 4} and {1, 3} <= {r["seed"] for r in runs}  # the search used 0 and 2
    assert all(r["epochs"] == 1 and r["num_tasks"] == 2 for r in runs)  # as the search ran them


@pytest.mark.parametrize("extra, option", [
    (["--val-fraction", "0"], "--val-fraction"), (["--looks", "4", "2"], "--looks"), (["--top", "3"], "--top"),
    (["--from", "nowhere", "--growth", "random"], "--growth"), (["--from", "nowhere"], "--from"),
    (["--density", "0.1", "--growth", "random", "--sparse-init", "ERK"], "--sparse-init")])
def test_bad_input_is_one_line_naming_the_option_before_anything_is_written(tmp_path, capsys, extra, option):
    argv = ["--preset", "quick", "--looks", "2", "4", *where(tmp_path, "bad"), *extra]
    with pytest.raises(SystemExit) as info:
        race.main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and option in err, err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "ray").exists()
