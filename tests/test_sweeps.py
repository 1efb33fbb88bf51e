"""The sweep system end to end on a local Ray with 2 CPUs: small quick-preset sweeps (digits, an MLP,
2 epochs, a few tasks) whose Parquet must hold exactly the expected rows; an interrupted and resumed
sweep; a failing trial; an early-stopping search; and (marked `cluster`) a two-node local cluster.

One local Ray serves the in-process tests of this module (`sweeps.common.start_ray` joins it);
the interrupted sweep and the cluster sweep run their drivers as subprocesses, as a user would.
"""

import inspect
import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import optuna
import pytest
import ray
from ray import tune
from ray_cluster import driver_env

from cldst import continual, results
from cldst import tune as cldst_tune
from cldst.data import load_benchmark

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeps import common, experiment, full_grid, search  # noqa: E402

pytestmark = pytest.mark.timeout(90)


def quick(tmp_path: Path, name: str, epochs: int = 2, num_tasks: int = 2) -> list[str]:
    return ["--preset", "quick", "--epochs", str(epochs), "--num-tasks", str(num_tasks), "--name", name,
            "--results", str(tmp_path / name), "--storage", str(tmp_path / "ray")]


def by_key(table, key: tuple[str, ...]) -> dict:
    return {tuple(row[k] for k in key): row for row in table.to_pylist()}


def test_quick_grid_writes_exactly_the_expected_rows(local_ray, tmp_path, capsys):
    argv = [*quick(tmp_path, "e2e"), "--density", "0.1", "--growth", "random", "momentum"]
    assert full_grid.main(argv) == 0
    out = capsys.readouterr().out
    loaded = results.load(tmp_path / "e2e")
    assert loaded.tasks.schema.equals(results.TASKS_SCHEMA) and loaded.runs.schema.equals(results.RUNS_SCHEMA)
    runs, tasks = loaded.runs.to_pylist(), loaded.tasks.to_pylist()
    assert sorted((r["sparse_init"], r["growth"]) for r in runs) == sorted(
        (i, g) for i in ("uniform", "ERK") for g in ("random", "momentum"))
    assert sorted((t["trial_id"], t["task"]) for t in tasks) == sorted((r["trial_id"], k) for r in runs for k in (0, 1))
    for r in runs:
        assert (r["status"], r["error"], r["tasks_done"], r["experiment"]) == ("ok", None, 2, "e2e")
        assert (r["benchmark"], r["net"], r["num_tasks"], r["classes_per_task"], r["density"], r["epochs"],
                r["update_frequency"]) == ("digits", "mlp", 2, 5, 0.1, 2, 10)
        assert len(r["acc_matrix"]) == 2 and r["acc"] == pytest.approx(sum(r["acc_matrix"][-1]) / 2)
        assert re.fullmatch(r".+/[0-9a-f]{20,}", r["node"])  # hostname/Ray node id
    for t in tasks:
        assert len(t["acc"]) == t["task"] + 1 and t["avg_acc"] == pytest.approx(sum(t["acc"]) / len(t["acc"]))
        assert 0 < t["capacity_used"] <= 1 and t["images_per_second"] > 0 and t["node"]
    assert f"Parquet results: {tmp_path / 'e2e'}/tasks" in out
    assert "4 ok, 0 error, 0 stopped" in out
    assert "top configurations by final test ACC (no validation split: a ranking on test data" in out
    # stdout is no terminal here: plain progress lines, the last one at the end; the per-task lines go to the log.
    assert "[e2e] tasks 8/8 | trials 4 ok, 0 running, 0 pending, 0 error, 0 stopped" in out
    log = (tmp_path / "e2e" / "sweep.log").read_text()
    assert "task 2/2: avg acc" not in out and log.count("task 2/2: avg acc") == 4 and log.count("ok after 2/2") == 4
    # Tune's view: one report per task learned, so training_iteration == tasks learned.
    trial_results = list((tmp_path / "ray" / "e2e").glob("*/result.json"))
    assert len(trial_results) == 4
    for path in trial_results:
        reports = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["training_iteration"] for r in reports] == [r["tasks_done"] for r in reports] == [1, 2]
        assert [r["task"] for r in reports] == [0, 1]


def test_a_failing_trial_is_recorded_as_error_and_the_others_finish(local_ray, tmp_path, capsys):
    args = full_grid.build_parser().parse_args(["--max-failures", "1"])
    exp = experiment.Experiment("err", tmp_path / "err", str(tmp_path / "ray"))
    space = {"benchmark": "digits", "epochs": 2, "num_tasks": 2, "lr": tune.grid_search([1e-2, 1e30, 5e-3])}
    common.run(args, exp, load_benchmark("digits"), space)  # lr 1e30: the loss becomes NaN in the first epoch
    assert common.summarize(exp, expected=3) == 0
    runs = results.load(exp.results_dir).runs.to_pylist()
    assert sorted(r["status"] for r in runs) == ["error", "ok", "ok"]
    failed = next(r for r in runs if r["status"] == "error")
    assert failed["lr"] == 1e30 and failed["tasks_done"] == 0 and failed["acc"] is None
    assert failed["error"].startswith("TrainingError: loss became nan in task 0")
    assert "2 ok, 1 error, 0 stopped" in capsys.readouterr().out
    # FailureConfig(max_failures=1): Tune retried it once before giving up.
    (error_file,) = (tmp_path / "ray" / "err").glob("*/error.txt")
    assert "Failure # 2" in error_file.read_text()


def fails_once_at_task_2(config: dict, bench, marker: str) -> None:
    """The trainable, but the first attempt dies while learning task 2 (as on a lost node)."""
    learn_task = continual.learn_task

    def dies_at_task_2(*args, **kwargs):
        task = inspect.signature(learn_task).bind(*args, **kwargs).arguments["task"]
        if task == 2 and not os.path.exists(marker):
            Path(marker).touch()
            raise RuntimeError("simulated node loss")
        return learn_task(*args, **kwargs)

    continual.learn_task = dies_at_task_2
    try:
        cldst_tune.trainable(config, bench)
    finally:
        continual.learn_task = learn_task


def test_a_retried_trial_continues_from_its_last_task_checkpoint(local_ray, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    exp = experiment.Experiment("retry", tmp_path / "retry", str(tmp_path / "ray"))
    args = full_grid.build_parser().parse_args(["--max-failures", "1"])
    fn = tune.with_resources(tune.with_parameters(fails_once_at_task_2, bench=load_benchmark("digits"),
                                                  marker=str(tmp_path / "failed-once")), {"cpu": 1})
    run_config = tune.RunConfig(name=exp.name, storage_path=exp.storage, verbose=0,
                                callbacks=[cldst_tune.ParquetCallback(exp.results_dir, exp.name)],
                                failure_config=tune.FailureConfig(max_failures=args.max_failures))
    tune.Tuner(fn, param_space={"benchmark": "digits", "epochs": 2, "num_tasks": 4}, run_config=run_config).fit()
    loaded = results.load(exp.results_dir)
    (run,) = loaded.runs.to_pylist()
    assert (run["status"], run["tasks_done"], run["error"]) == ("ok", 4, None)
    created = [t["created_at"] for t in loaded.tasks.to_pylist()]
    assert [t["task"] for t in loaded.tasks.to_pylist()] == [0, 1, 2, 3]
    # Tasks 0 and 1 were learned once, before the failure; the retry restarted at task 2.
    failed_at = datetime.fromtimestamp((tmp_path / "failed-once").stat().st_mtime, timezone.utc)
    assert created[1] < failed_at < created[2]
    trial_dir = next((tmp_path / "ray" / "retry").glob("*/result.json")).parent
    iterations = [json.loads(line)["training_iteration"] for line in (trial_dir / "result.json").open()]
    assert iterations == [1, 2, 3, 4]


def test_an_interrupted_sweep_resumes_without_rerunning_or_duplicating(local_ray, tmp_path):
    argv = [*quick(tmp_path, "resume", epochs=6, num_tasks=5), "--growth", "random", "--density", "0.1", "0.05",
            "--max-concurrent", "1", "--verbose"]  # --verbose: the per-task lines on stdout too
    driver = subprocess.Popen([sys.executable, str(REPO / "sweeps" / "full_grid.py"), *argv], cwd=tmp_path,
                              env=driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in driver.stdout:  # Ctrl-C once the first trial has ended and the second has learned 2 tasks
        lines.append(line)
        if "task 2/5" in line and any("ok after 5/5 tasks" in seen for seen in lines):
            break
    driver.send_signal(signal.SIGINT)
    output = "".join(lines) + driver.communicate(timeout=60)[0]
    assert driver.returncode == 1, output
    assert "trials unfinished: rerun the same command to resume" in output
    before = results.load(tmp_path / "resume")
    runs_before = by_key(before.runs, ("trial_id",))
    tasks_before = by_key(before.tasks, ("trial_id", "task"))
    assert 1 <= len(runs_before) < 4

    assert full_grid.main(argv) == 0  # the same command again
    after = results.load(tmp_path / "resume")
    runs_after, tasks_after = by_key(after.runs, ("trial_id",)), by_key(after.tasks, ("trial_id", "task"))
    assert len(after.runs) == 4 and {r["status"] for r in runs_after.values()} == {"ok"}
    assert len(after.tasks) == len(tasks_after) == 4 * 5  # no (trial, task) twice
    for key, row in runs_before.items():  # trials that had ended were not rerun
        assert runs_after[key]["created_at"] == row["created_at"]
    for key, row in tasks_before.items():  # nor were tasks learned before the interruption
        assert tasks_after[key]["created_at"] == row["created_at"], key


def test_search_stops_weak_trials_early_and_keeps_its_study(local_ray, tmp_path, capsys):
    argv = ["--preset", "quick", "--epochs", "2", "--num-samples", "6", "--density-range", "0.005", "0.3",
            "--max-concurrent", "1", "--grace-period", "1", "--name", "search", "--results", str(tmp_path / "search"),
            "--storage", str(tmp_path / "ray")]
    assert search.main(argv) == 0
    loaded = results.load(tmp_path / "search")
    runs = loaded.runs.to_pylist()
    stopped = [r for r in runs if r["status"] == "stopped"]
    assert len(runs) == 6 and stopped and any(r["status"] == "ok" for r in runs)
    tasks_per_trial = {}
    for t in loaded.tasks.to_pylist():
        tasks_per_trial[t["trial_id"]] = tasks_per_trial.get(t["trial_id"], 0) + 1
    for r in stopped:
        assert 1 <= r["tasks_done"] < 5 and tasks_per_trial[r["trial_id"]] == r["tasks_done"]
    study_path = tmp_path / "search" / "optuna.db"
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{study_path}")
    states = sorted(t.state.name for t in study.trials)
    assert states == sorted(["PRUNED"] * len(stopped) + ["COMPLETE"] * (6 - len(stopped)))
    # It selected on validation (default --val-fraction 0.1): each COMPLETE value is its trial's final validation ACC.
    ok = {r["trial_id"]: r for r in runs if r["status"] == "ok"}
    complete = {t.user_attrs["tune_trial_id"]: t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert complete.keys() == ok.keys() and all(complete[t] == ok[t]["val_acc"] for t in ok)
    assert all(r["val_fraction"] == 0.1 and r["val_acc"] != r["acc"] for r in ok.values())
    out = capsys.readouterr().out
    assert f"{len(stopped)} stopped" in out and "top configurations by final validation ACC" in out
    # The same command again resumes the finished search: nothing new runs, the study is unchanged.
    assert search.main(argv) == 0
    assert len(optuna.load_study(study_name="search", storage=f"sqlite:///{study_path}").trials) == 6
    assert results.load(tmp_path / "search").runs.equals(loaded.runs)
