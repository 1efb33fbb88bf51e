"""Drivers stopped inside the race windows of a resume (issue 18), each window held open by a hook that blocks the
driver there (tests/race_driver.py), then rerun with the same command:

1. PBT resume: Ctrl-C once Tune has put a donor's config and checkpoint on a member exploited while paused. The
   rerun continues the member from the donor's checkpoint; it does not relearn the task it dropped.
2. Deleted checkpoint: SIGKILL after Tune deleted a trial's previous checkpoint and before it saved the state that
   names the new one. The rerun continues the trial from the checkpoint that survived.

(The third race, a row for each task an exploit threw away, is
tests/test_adaptive.py::test_every_member_has_one_row_per_task_and_those_an_exploit_dropped_are_discarded.)
"""

import json
import signal
from pathlib import Path

import pytest
from ray_cluster import driver_env
from test_faults import Driver, by_key, no_driver_left, rows  # noqa: F401 (no_driver_left: an autouse fixture)

from cldst import lineage

REPO = Path(__file__).resolve().parents[1]
RACE_DRIVER = str(REPO / "tests" / "race_driver.py")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]  # two drivers, each starting its own local Ray


def window(tmp_path: Path, **env: str) -> tuple[Path, Path, dict]:
    """The marker the hook writes, the file that releases it, and a driver environment naming both."""
    marker, release = tmp_path / "window.json", tmp_path / "release"
    return marker, release, driver_env(RACE_MARKER=str(marker), RACE_RELEASE=str(release), **env)


def test_a_pbt_member_interrupted_after_its_exploit_resumes_from_the_donors_checkpoint(tmp_path):
    exp = tmp_path / "pbt"
    argv = ["--preset", "quick", "--epochs", "1", "--num-tasks", "3", "--population", "4", "--quantile", "0.5",
            "--growth", "random", "momentum", "--density", "0.2", "0.1", "--name", "pbt", "--results", str(exp),
            "--storage", str(tmp_path / "ray")]
    marker, release, env = window(tmp_path, TUNE_GLOBAL_CHECKPOINT_S="0")  # Tune saves its state at every step
    driver = Driver([RACE_DRIVER, "exploited-while-paused", "adaptive", *argv], tmp_path, env)
    driver.wait_for(marker.exists, timeout=240)
    exploit = json.loads(marker.read_text())
    member, donor, task = exploit["member"], exploit["donor"], exploit["tasks_done"]
    driver.process.send_signal(signal.SIGINT)  # Tune saves its state once the step the hook holds ends
    release.touch()
    assert driver.wait(timeout=120) == 1, driver.output
    dropped = by_key(rows(exp, "tasks"), "trial_id", "task")[(member, task - 1)]

    again = Driver([str(REPO / "sweeps" / "adaptive.py"), *argv], tmp_path, driver_env())
    assert again.wait(timeout=240) == 0, again.output
    runs, tasks = rows(exp, "runs"), by_key(rows(exp, "tasks"), "trial_id", "task")
    assert len(runs) == 4 and {run["status"] for run in runs} == {"ok"}
    assert sorted(tasks) == sorted((run["trial_id"], t) for run in runs for t in range(3))
    # The member went on from the donor's checkpoint: the task it had dropped stays dropped, not learned again.
    assert tasks[(member, task)]["parent_trial_id"] == donor
    assert tasks[(member, task - 1)]["discarded"] and tasks[(member, task - 1)]["created_at"] == dropped["created_at"]
    rows_of = lineage.by_trial(tasks.values())
    for run in runs:
        assert [row["task"] for row in lineage.lineage(rows_of.get, run["trial_id"])] == [0, 1, 2]


def test_a_driver_killed_after_tune_deleted_a_checkpoint_resumes_from_the_surviving_one(tmp_path):
    exp = tmp_path / "deleted"
    argv = ["--preset", "quick", "--epochs", "1", "--num-tasks", "3", "--growth", "random", "--sparse-init",
            "uniform", "--density", "0.2", "--name", "deleted", "--results", str(exp),
            "--storage", str(tmp_path / "ray")]
    marker, _, env = window(tmp_path)
    driver = Driver([RACE_DRIVER, "checkpoint-deleted", "full_grid", *argv], tmp_path, env)
    driver.wait_for(marker.exists, timeout=240)
    driver.kill()
    trial_dir = Path(json.loads(marker.read_text())["checkpoint"]).parent
    # Tune's saved state names checkpoint_000000, which it deleted on registering checkpoint_000001.
    assert sorted(path.name for path in trial_dir.glob("checkpoint_*")) == ["checkpoint_000001"]
    before = by_key(rows(exp, "tasks"), "trial_id", "task")
    assert sorted(task for _, task in before) == [0, 1]

    again = Driver([str(REPO / "sweeps" / "full_grid.py"), *argv], tmp_path, driver_env())
    assert again.wait(timeout=180) == 0, again.output
    assert "1 ok, 0 error, 0 stopped, 1 of 1 ended" in again.output
    tasks = by_key(rows(exp, "tasks"), "trial_id", "task")
    assert sorted(task for _, task in tasks) == [0, 1, 2]
    for key, row in before.items():  # continued after task 1, from the surviving checkpoint: nothing relearned
        assert tasks[key]["created_at"] == row["created_at"]
