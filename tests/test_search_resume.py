"""A search resumes exactly (sweeps/search_state.py): ASHA's rungs rebuilt from the Parquet tasks rows, and the
Optuna trials a crash left RUNNING settled from the Parquet runs rows.

The unit tests feed hand-made rows; the end-to-end test kills a search driver (SIGKILL, as a crash or an
out-of-memory kill would), reruns it, and compares it with the same search left uninterrupted.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray_cluster import driver_env

from cldst import results
from cldst.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeps import search  # noqa: E402
from sweeps.search_state import LOST, TUNE_TRIAL_ID, ResumableASHA, SelectingSearch  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
FIXED = {"benchmark": "digits", "net": "mlp", "epochs": 1, "num_tasks": 4, "val_fraction": 0.1, "seed": 0}
# (trial, val_avg_acc after tasks 1, 2, 3, 4), in the order the trials ran one after the other
CURVES = [("t0", [80, 70, 60, 50]), ("t1", [90, 85, 80, 75]), ("t2", [70]), ("t3", [95, 60]), ("t4", [85, 80, 79, 70]),
          ("t5", [99, 98, 97, 96]), ("t6", [60])]


def asha(scheduler_class=ASHAScheduler, **extra):
    return scheduler_class(time_attr="tasks_done", metric="val_avg_acc", mode="max", max_t=4, grace_period=1,
                           reduction_factor=2, **extra)


def live_run(curves) -> tuple[set[str], list]:
    """Ray's ASHA fed the curves as Tune would: (the trials it stopped, its rungs)."""
    scheduler, stopped = asha(), set()
    for trial_id, values in curves:
        trial = SimpleNamespace(trial_id=trial_id)
        scheduler.on_trial_add(None, trial)
        for tasks_done, value in enumerate(values, start=1):
            decision = scheduler.on_trial_result(None, trial, {"tasks_done": tasks_done, "val_avg_acc": value})
            if tasks_done < 4 and decision == TrialScheduler.STOP:  # at max_t every trial stops: its end
                stopped.add(trial_id)
                break
    return stopped, [(milestone, dict(recorded)) for milestone, recorded in scheduler._brackets[0]._rungs]


def task_rows(curves) -> list[dict]:
    rows, stamp = [], START
    for trial_id, values in curves:
        for task, value in enumerate(values):
            stamp += timedelta(seconds=1)
            rows.append({"trial_id": trial_id, "task": task, "val_avg_acc": float(value), "created_at": stamp})
    return rows


def test_replayed_rungs_equal_the_live_ones_and_decide_the_same(tmp_path):
    stopped, rungs = live_run(CURVES)
    assert stopped == {"t2", "t3", "t6"}  # by hand: below the median of the values before it at rung 1 or 2
    shuffled = task_rows(CURVES)[::-1]  # the order rows are read in does not matter: created_at does
    scheduler = asha(ResumableASHA, results_dir=tmp_path, searcher=SimpleNamespace(lost=set()))
    scheduler.replay(shuffled)
    assert [(m, dict(r)) for m, r in scheduler._brackets[0]._rungs] == rungs
    assert scheduler._stopped == stopped
    # A trial stopped before the restart, and resumed by Tune from its checkpoint, stops at its next result.
    scheduler._replayed = True
    assert scheduler.on_trial_result(None, SimpleNamespace(trial_id="t3"),
                                     {"tasks_done": 3, "val_avg_acc": 99.0}) == TrialScheduler.STOP
    # One that ran on from a rung it passed is judged at the next rung against every value recorded there.
    scheduler.on_trial_add(None, SimpleNamespace(trial_id="t7"))
    assert scheduler.on_trial_result(None, SimpleNamespace(trial_id="t7"),
                                     {"tasks_done": 1, "val_avg_acc": 75.0}) == TrialScheduler.STOP


def test_a_restarted_scheduler_without_the_replay_judges_differently(tmp_path):
    """What ray-project/ray#30838 costs: empty rungs let the next trial through where ASHA had stopped it."""
    assert CURVES[-1] == ("t6", [60]) and "t6" in live_run(CURVES)[0]
    fresh = asha()
    trial = SimpleNamespace(trial_id="t6")
    fresh.on_trial_add(None, trial)
    assert fresh.on_trial_result(None, trial, {"tasks_done": 1, "val_avg_acc": 60.0}) == TrialScheduler.CONTINUE
    rebuilt = asha(ResumableASHA, results_dir=tmp_path, searcher=SimpleNamespace(lost=set()))
    rebuilt.replay(task_rows(CURVES[:-1]))
    rebuilt._replayed = True
    rebuilt.on_trial_add(None, trial)
    assert rebuilt.on_trial_result(None, trial, {"tasks_done": 1, "val_avg_acc": 60.0}) == TrialScheduler.STOP


def test_the_rungs_are_rebuilt_from_the_parquet_without_the_lost_trials(tmp_path):
    for trial_id, values in CURVES:
        write_trial(tmp_path, trial_id, {}, values, None)
    scheduler = asha(ResumableASHA, results_dir=tmp_path, searcher=SimpleNamespace(lost={"t5"}))
    scheduler.on_trial_add(None, SimpleNamespace(trial_id="t7"))  # the first trial Tune adds: the replay
    kept = [curve for curve in CURVES if curve[0] != "t5"]
    assert [(m, dict(r)) for m, r in scheduler._brackets[0]._rungs] == live_run(kept)[1]


def write_trial(root: Path, trial_id: str, params: dict, vals: list[float], status: str | None) -> dict | None:
    """A trial's Parquet: its tasks rows and, unless it is still running (status None), its runs row."""
    config = RunConfig.from_dict({**FIXED, **params}).resolve().to_dict()
    common = results.common_columns(config, "s", trial_id, "node")
    rows = [results.task_row(common, {"task": t, "acc": [90.0] * (t + 1), "fwt_acc": [], "avg_acc": 90.0, "bwt": 0.0,
                                      "val_acc": [v] * (t + 1), "val_avg_acc": v, "task_density": 0.1,
                                      "capacity_used": 0.1, "reused_fraction": 0.0, "fired_fraction": 0.0,
                                      "train_seconds": 1.0, "images_per_second": 1.0})
            for t, v in enumerate(vals)]
    results.write_part(root, "tasks", trial_id, rows)
    if status is None:
        return None
    run = results.run_row(common, rows, status, "RuntimeError: boom" if status == "error" else None, 1.0)
    results.write_part(root, "runs", trial_id, [run])
    return run


def state_counts(study: optuna.Study) -> dict[str, int]:
    names = [t.state.name for t in study.get_trials(deepcopy=False)]
    return {state: names.count(state) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}


def test_settle_tells_the_study_what_the_parquet_says(tmp_path):
    space = {"density": optuna.distributions.FloatDistribution(0.05, 0.2)}
    searcher = SelectingSearch(space, metric="val_avg_acc", mode="max", study_name="s",
                               storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"),
                               results_dir=tmp_path, experiment="s", fixed=FIXED)
    study = searcher._ot_study
    # Asked before the crash, each trial's end in the Parquet but not in the study; and one Tune will resume.
    for trial_id, vals, status in [("ok1", [80.0, 81.5, 82.0, 83.25], "ok"), ("stop1", [50.0], "stopped"),
                                   ("err1", [70.0, 60.0], "error"), ("lost1", [75.0], None), ("live1", [88.0], None),
                                   ("told1", [40.0], None)]:
        searcher.suggest(trial_id)
        write_trial(tmp_path, trial_id, searcher._ot_trials[trial_id].params, vals, status)
    searcher.on_trial_complete("told1", {"tasks_done": 1, "num_tasks": 4})  # stopped and told; its runs row: never
    study.ask(fixed_distributions=space)  # asked, and the crash came before its Tune trial id was recorded
    searcher._ot_trials = {"live1": searcher._ot_trials["live1"]}  # what the restored snapshot knew
    searcher.settle()
    by_id = {t.user_attrs.get(TUNE_TRIAL_ID, f"lost-optuna-{t.number}"): t for t in study.get_trials(deepcopy=False)}
    assert {k: t.state.name for k, t in by_id.items()} == {
        "ok1": "COMPLETE", "stop1": "PRUNED", "err1": "FAIL", "lost1": "FAIL", "live1": "RUNNING",
        "told1": "PRUNED", "lost-optuna-6": "FAIL"}
    assert searcher.lost == set(by_id) - {"live1"}
    assert by_id["ok1"].value == 83.25  # the Parquet's final validation ACC
    runs = {r["trial_id"]: r for r in results.load(tmp_path).runs.to_pylist()}
    assert (runs["lost1"]["status"], runs["lost1"]["error"], runs["lost1"]["tasks_done"]) == ("error", LOST, 1)
    assert runs["lost1"]["density"] == pytest.approx(by_id["lost1"].params["density"])
    assert runs["lost-optuna-6"]["tasks_done"] == 0
    assert (runs["told1"]["status"], runs["told1"]["error"], runs["told1"]["tasks_done"]) == ("stopped", LOST, 1)
    statuses = [r["status"] for r in runs.values()]
    counts = state_counts(study)
    assert (counts["COMPLETE"], counts["PRUNED"], counts["FAIL"]) == tuple(
        statuses.count(s) for s in ("ok", "stopped", "error"))
    # The resumed trial ends later; a trial told already (settled, or told just before the crash) is not told twice.
    searcher.on_trial_complete("live1", {"tasks_done": 4, "num_tasks": 4, "val_avg_acc": 90.0})
    searcher._ot_trials["ok1"] = study.trials[0]
    searcher.on_trial_complete("ok1", {"tasks_done": 4, "num_tasks": 4, "val_avg_acc": 1.0})
    assert study.trials[0].value == 83.25 and state_counts(study)["RUNNING"] == 0


# ---------------------------------------------------------------- end to end: kill the driver, rerun, compare


def argv(tmp_path: Path, name: str) -> list[str]:
    # 2 epochs and densities from 0.02: the trials differ (at 1 epoch, or near 0.005, most stay at chance and tie).
    return ["--preset", "quick", "--epochs", "2", "--num-tasks", "4", "--num-samples", "7", "--sampler", "random",
            "--grace-period", "1", "--density-range", "0.02", "0.3", "--max-concurrent", "1", "--name", name,
            "--results", str(tmp_path / name), "--storage", str(tmp_path / "ray"), "--progress-every", "600"]


def ended(root: Path) -> list[dict]:
    try:
        return results.load(root, on_bad="skip").runs.to_pylist()
    except results.ResultsError:
        return []


def outcome(root: Path) -> dict[tuple, str]:
    """status per proposal (the sampled settings, rounded), over the trials that ran to an end."""
    return {(r["sparse_init"], r["growth"], round(r["density"], 9), round(r["death_rate"], 9)): r["status"]
            for r in ended(root) if r["error"] != LOST}


@pytest.mark.cluster  # the killed driver starts a Ray of its own beside the module's
@pytest.mark.timeout(300)
def test_a_killed_search_resumes_to_the_same_stopped_trials_and_a_settled_study(local_ray, tmp_path):
    assert search.main(argv(tmp_path, "straight")) == 0
    straight = outcome(tmp_path / "straight")
    assert "stopped" in straight.values() and "ok" in straight.values()

    driver = subprocess.Popen([sys.executable, str(REPO / "sweeps" / "search.py"), *argv(tmp_path, "killed")],
                              cwd=tmp_path, env=driver_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, tasks_dir = time.monotonic() + 150, tmp_path / "killed" / "tasks"
    while len(list(tasks_dir.glob("part-*.parquet"))) < 4 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # Mid-search: 3 trials ended (one at a time), the 4th has learned its first task; rungs hold values, later
    # trials are not judged yet. Not as a trial ends: Tune uploads its state snapshot in the background, and a
    # driver killed before the upload after a trial's last task leaves a state naming the checkpoint that task's
    # replaced (num_to_keep=1), which no resume can load. So the kill also waits for a snapshot written after
    # the 4th trial's first task (its checkpoint forces one): the searcher resumes from where the state says.
    learned = max(path.stat().st_mtime for path in tasks_dir.glob("part-*.parquet"))
    while driver.poll() is None and time.monotonic() < deadline and not any(
            path.stat().st_mtime > learned for path in (tmp_path / "ray" / "killed").glob("experiment_state*.json")):
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    before = len(ended(tmp_path / "killed"))
    assert 3 <= before < 7, before

    assert search.main(argv(tmp_path, "killed")) == 0
    assert outcome(tmp_path / "killed") == straight
    runs = ended(tmp_path / "killed")
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{tmp_path / 'killed' / 'optuna.db'}")
    counts, statuses = state_counts(study), [r["status"] for r in runs]
    assert counts["RUNNING"] == 0
    assert (counts["COMPLETE"], counts["PRUNED"], counts["FAIL"]) == tuple(
        statuses.count(s) for s in ("ok", "stopped", "error"))
    values = {t.user_attrs[TUNE_TRIAL_ID]: t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert values == {r["trial_id"]: r["val_acc"] for r in runs if r["status"] == "ok"}
