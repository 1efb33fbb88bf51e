"""Every sweep on a cluster that shares nothing but the network and an S3 server (tests/shared_nothing.py: each
worker node in a mount namespace of its own, a head with no CPUs, moto's S3 on loopback), from S3 alone:

1. a file a trial writes on a worker node is not on the driver's machine (the fixture shares nothing);
2. the grid, the search and the PBT run complete with exact Parquet (no row lost or twice), quietly: no
   traceback, none of Tune's repeated warnings;
3. a worker node killed mid-trial: the trial resumes on the other node from its S3 checkpoint, at its next task;
4. the driver killed mid-sweep: the same command resumes from the experiment state in S3;
5. a PBT exploit restores a checkpoint another node saved (members pinned to nodes: tests/pinned_driver.py);
6. trials that lose their actor or worker, the failures cued by tests/failing_driver.py: Ray's ActorUnavailableError
   reported twice (as for one node death) in each trial of a grid of 4 and of a PBT population of 4 (8 losses) is
   retried from the last task checkpoint without counting against --max-failures; a worker SIGKILLed (as by an
   OOM killer) is the infrastructure's, and past --max-infra-retries its trial resumes on a rerun; a trial's own
   error stays `error` on a rerun, and --retry-errored resumes it.

Drivers run as subprocesses with `--storage s3://...`, as a user would; the fault tests' helpers are shared
(tests/test_faults.py).
"""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from shared_nothing import S3Server, SharedNothingCluster, namespaces_unavailable
from test_faults import Driver, by_key, no_driver_left, rows, workers  # noqa: F401 (no_driver_left: autouse)

from analysis import adaptive as analysis_adaptive
from analysis.data import load_all
from cldst import results

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {name: str(REPO / "sweeps" / f"{name}.py") for name in ("full_grid", "search", "adaptive")}
PINNED_DRIVER = str(REPO / "tests" / "pinned_driver.py")
FAILING_DRIVER = str(REPO / "tests" / "failing_driver.py")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    with SharedNothingCluster(tmp_path_factory.mktemp("cluster-logs"), s3) as shared_nothing:
        yield shared_nothing


def argv(script: str, tmp_path: Path, s3: S3Server, cluster: SharedNothingCluster, name: str, *options: str) -> list:
    return [SCRIPTS[script], "--preset", "quick", "--epochs", "1", "--name", name, "--results", str(tmp_path / name),
            "--storage", s3.uri("ray"), "--address", cluster.address, *options]


def exact(exp: Path, trials: int) -> tuple[dict, dict]:
    """The runs and tasks rows by key, after checking each trial has one row per task it learned, no more."""
    loaded = results.load(exp)  # every part file whole and readable: raises otherwise
    runs, tasks = by_key(loaded.runs.to_pylist(), "trial_id"), by_key(loaded.tasks.to_pylist(), "trial_id", "task")
    assert len(runs) == trials
    for (trial_id,), run in runs.items():
        assert sorted(t for tr, t in tasks if tr == trial_id) == list(range(run["tasks_done"])), trial_id
    return runs, tasks


def quiet(output: str, node_died: bool = False) -> None:
    """None of the lines a user can do nothing about (sweeps.ray_logs.tune_logs, sweeps.cluster), and no traceback
    but, where a node died, Tune's report of the trial it cut short."""
    noise = ["SystemExit", "snapshotting has been triggered", "Remote file not found", "Error handling checkpoint"]
    for line in noise + ([] if node_died else ["Traceback"]):
        assert line not in output, output[-3000:]


def node_id(row: dict) -> str:
    return row["node"].rsplit("/", 1)[1]  # "hostname/node id": one hostname for every node here


# ---------------------------------------------------------------- 1. nothing shared but the network and S3

PROBE = """
import json, os, sys
import ray
from ray import tune

def trial(config):
    for folder in (".", "/tmp"):
        with open(os.path.join(folder, config["marker"]), "w") as f:
            f.write("written by a trial on a worker node")
    tune.report({"cwd": os.getcwd(), "node": ray.get_runtime_context().get_node_id(),
                 "sees_driver": os.path.exists(config["driver_folder"])})

ray.init(address=sys.argv[1], logging_level="ERROR")
run = tune.RunConfig(name="probe", storage_path=sys.argv[4], verbose=0)
result = tune.Tuner(trial, param_space={"marker": sys.argv[2], "driver_folder": sys.argv[3]}, run_config=run).fit()[0]
print(json.dumps({key: result.metrics[key] for key in ("cwd", "node", "sees_driver")}))
"""


def test_a_file_a_trial_writes_on_a_worker_node_is_not_on_the_driver_s_machine(cluster, s3, tmp_path):
    workers(cluster, 2)
    marker = f"marker-{uuid.uuid4().hex}"
    probe = subprocess.run([sys.executable, "-c", PROBE, cluster.address, marker, str(tmp_path), s3.uri("probe")],
                           env=cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["node"] != cluster.node_id(cluster.nodes[0])  # the head has no CPUs: a worker node ran it
    assert seen["sees_driver"] is False  # the driver's folder is not on the worker node
    assert not Path(seen["cwd"], marker).exists() and not Path("/tmp", marker).exists()
    assert any(name.endswith("/result.json") for name in s3.files("probe"))  # Tune's record went to S3


# ---------------------------------------------------------------- 2. the grid, the search and PBT from S3 alone

SWEEPS = {  # script -> (options, trials)
    "full_grid": (["--num-tasks", "3", "--growth", "random", "--density", "0.2"], 2),
    "search": (["--num-tasks", "3", "--num-samples", "2", "--grace-period", "3"], 2),
}


@pytest.mark.parametrize("script", list(SWEEPS))
def test_every_sweep_completes_from_s3_alone_with_exact_rows_and_quiet_output(script, cluster, s3, tmp_path):
    workers(cluster, 2)
    options, trials = SWEEPS[script]
    name = f"{script}-s3"
    driver = Driver(argv(script, tmp_path, s3, cluster, name, *options), tmp_path, cluster.env)
    assert driver.wait(timeout=240) == 0, driver.output
    assert f"{trials} ok, 0 error, 0 stopped, {trials} of {trials} ended" in driver.output
    quiet(driver.output)
    assert f"Ray Tune state saved to {s3.uri('ray/' + name)} " in driver.output  # what saving it there cost
    runs, _ = exact(tmp_path / name, trials)
    assert {run["tasks_done"] for run in runs.values()} == {3}
    assert not (tmp_path / "ray").exists()  # Tune's state and checkpoints went to S3, not next to the results
    stored = s3.files(f"ray/{name}")
    assert any(path.startswith("experiment_state-") for path in stored)
    for (trial_id,) in runs:  # each trial's task checkpoints are there
        assert any(f"_{trial_id}_" in path and "/checkpoint_" in path for path in stored), trial_id


# ---------------------------------------------------------------- 3. a worker node dies mid-trial

def test_a_dead_worker_node_s_trial_resumes_on_the_other_node_from_its_s3_checkpoint(cluster, s3, tmp_path):
    nodes = {cluster.node_id(node): node for node in workers(cluster, 2)}
    exp = tmp_path / "node-loss"
    # One trial of 5 tasks, ~2 s each: its node is killed once the trial has learned a task there.
    driver = Driver(argv("full_grid", tmp_path, s3, cluster, "node-loss", "--epochs", "150", "--num-tasks", "5",
                         "--growth", "random", "--sparse-init", "uniform", "--density", "0.1", "--max-failures", "2"),
                    tmp_path, cluster.env)
    before = driver.wait_for(lambda: rows(exp, "tasks"))
    victim = node_id(before[0])
    cluster.kill(nodes[victim])
    assert len(before) < 5, "the trial ended before its node could be killed"

    assert driver.wait(timeout=240) == 0, driver.output
    quiet(driver.output, node_died=True)
    runs, tasks = exact(exp, 1)
    ((trial_id,), run), = runs.items()
    assert (run["status"], run["tasks_done"]) == ("ok", 5)
    for row in before:  # tasks learned before the kill were kept, not relearned
        assert tasks[(trial_id, row["task"])]["created_at"] == row["created_at"]
    on_victim = [node_id(tasks[(trial_id, t)]) == victim for t in range(5)]
    resumed_at = on_victim.index(False)  # the first task learned on the other node: right after the last checkpoint
    assert resumed_at >= len(before) and not any(on_victim[resumed_at:]), on_victim
    # Tune's own record, read back from S3: no report twice, and every task learned after the resume. The reports
    # made on the dead node reach S3 only if Tune synced the trial's folder before the kill (seen missing once).
    (result_json,) = [p for p in s3.files("ray/node-loss") if f"_{trial_id}_" in p and p.endswith("/result.json")]
    reported = [json.loads(line)["task"] for line in s3.read(f"ray/node-loss/{result_json}").splitlines()]
    assert reported == sorted(set(reported)) and set(range(resumed_at, 5)) <= set(reported), reported


# ---------------------------------------------------------------- 4. the driver dies mid-sweep

def test_a_killed_driver_s_rerun_resumes_from_the_experiment_state_in_s3(cluster, s3, tmp_path):
    workers(cluster, 2)
    exp = tmp_path / "killed"
    command = argv("full_grid", tmp_path, s3, cluster, "killed", "--epochs", "60", "--num-tasks", "4",
                   "--growth", "random", "--sparse-init", "uniform", "--density", "0.2", "0.1", "0.05")
    driver = Driver(command, tmp_path, cluster.env)

    def some_ended_and_one_running() -> bool:
        ended = {r["trial_id"] for r in rows(exp, "runs")}
        return bool(ended) and any(t["trial_id"] not in ended for t in rows(exp, "tasks"))

    driver.wait_for(some_ended_and_one_running, timeout=200)
    driver.kill()
    runs_before, tasks_before = by_key(rows(exp, "runs"), "trial_id"), by_key(rows(exp, "tasks"), "trial_id", "task")

    again = Driver(command, tmp_path, cluster.env)  # the same command
    assert again.wait(timeout=240) == 0, again.output
    assert f"resuming killed from {s3.uri('ray/killed')}" in again.output
    assert "3 ok, 0 error, 0 stopped, 3 of 3 ended" in again.output
    quiet(again.output)
    runs, tasks = exact(exp, 3)
    assert {run["tasks_done"] for run in runs.values()} == {4}
    assert runs_before.keys() <= runs.keys()
    last = {}
    for trial_id, task in tasks_before:
        last[trial_id] = max(task, last.get(trial_id, -1))
    # No task learned before the kill was learned again, but for each trial's last: the state in S3 is the last
    # snapshot's (every 10 s or more, uploads apart), so a trial that ended or checkpointed since continues from
    # the checkpoint that snapshot names, and its last task's row is replaced (never doubled).
    for (trial_id, task), row in tasks_before.items():
        if task < last[trial_id]:
            assert tasks[(trial_id, task)]["created_at"] == row["created_at"], (trial_id, task)


# ---------------------------------------------------------------- 5. a PBT exploit, across nodes

def test_pbt_completes_from_s3_and_each_exploit_restores_a_checkpoint_the_other_node_saved(cluster, s3, tmp_path):
    pins = [cluster.pin(node) for node in workers(cluster, 2)]
    name = "adaptive-s3"
    # Two members, each pinned to a node of its own (1 CPU each): after tasks 0 and 1 the lower ranked copies
    # the other, so each of the 2 exploits restores, from S3, the checkpoint the other node saved.
    options = ["--num-tasks", "3", "--population", "2", "--quantile", "0.5", "--growth", "random", "momentum",
               "--density", "0.2", "0.1"]
    command = [PINNED_DRIVER, "adaptive", *argv("adaptive", tmp_path, s3, cluster, name, *options)[1:]]
    driver = Driver(command, tmp_path, {**cluster.env, "PINS": ",".join(pins)})
    assert driver.wait(timeout=240) == 0, driver.output
    assert "2 ok, 0 error, 0 stopped, 2 of 2 ended" in driver.output
    quiet(driver.output)
    assert f"Ray Tune state saved to {s3.uri('ray/' + name)} " in driver.output and not (tmp_path / "ray").exists()
    runs, tasks = exact(tmp_path / name, 2)
    assert {run["tasks_done"] for run in runs.values()} == {3}
    node_of = {trial_id: {node_id(row) for (tr, _), row in tasks.items() if tr == trial_id} for (trial_id,) in runs}
    assert sorted(map(len, node_of.values())) == [1, 1] and len(set.union(*node_of.values())) == 2  # pinned apart
    exploits = [row for row in tasks.values() if row["parent_trial_id"] is not None]
    assert sorted(row["task"] for row in exploits) == [1, 2]  # one per synchronisation point
    stored = s3.files(f"ray/{name}")
    for row in exploits:
        donor = tasks[(row["parent_trial_id"], row["task"] - 1)]
        assert row["parent_trial_id"] != row["trial_id"] and node_id(row) != node_id(donor)
        # The donor's model came over whole: its tasks' weights are frozen, so they score as they did on its node.
        assert row["acc"][:row["task"]] == donor["acc"], (row, donor)
        assert any(f"_{donor['trial_id']}_" in path and "/checkpoint_" in path for path in stored)
    loaded = load_all(tmp_path / name)  # every member's lineage is whole
    for trial_id in loaded.runs["trial_id"]:
        assert list(analysis_adaptive.lineage(loaded.tasks, trial_id)["task"]) == [0, 1, 2]


# ---------------------------------------------------------------- 6. lost actors and workers, and a trial's own error

GRID = ["--num-tasks", "3", "--growth", "random", "--sparse-init", "uniform", "--density", "0.2", "0.1"]


def failing(fault: str, script: str, tmp_path: Path, s3, cluster, name: str, *options: str) -> Driver:
    command = argv(script, tmp_path, s3, cluster, name, *options)
    return Driver([FAILING_DRIVER, script, *command[1:]], tmp_path, {**cluster.env, "FAULT": fault})


def test_eight_lost_actors_in_a_grid_of_4_are_retried_without_counting_against_max_failures(cluster, s3, tmp_path):
    """A grid of 4 trials, each losing its actor twice in task 1 (Ray's ActorUnavailableError, reported twice as for
    one node death): 8 losses, every retry the infrastructure's, none counted against --max-failures 1, and
    every trial ends ok with one row per task."""
    workers(cluster, 2)
    grid = [*GRID, "0.05", "0.3"]  # GRID's densities and two more: 4 trials
    driver = failing("unavailable:1:2", "full_grid", tmp_path, s3, cluster, "lost-8", *grid, "--max-failures", "1")
    assert driver.wait(timeout=240) == 0, driver.output
    assert "4 ok, 0 error, 0 stopped, 4 of 4 ended" in driver.output
    quiet(driver.output, node_died=True)
    runs, _ = exact(tmp_path / "lost-8", 4)
    for run in runs.values():
        assert (run["status"], run["tasks_done"], run["infra_retries"], run["failure"]) == ("ok", 3, 2, None)


def test_eight_lost_actors_in_a_population_of_4_rejoin_at_their_own_task_boundaries(cluster, s3, tmp_path):
    workers(cluster, 2)
    options = ["--num-tasks", "3", "--population", "4", "--quantile", "0.25", "--growth", "random", "momentum",
               "--density", "0.2", "0.1", "--max-failures", "1"]
    driver = failing("unavailable:1:2", "adaptive", tmp_path, s3, cluster, "pbt-lost", *options)
    assert driver.wait(timeout=240) == 0, driver.output
    assert "4 ok, 0 error, 0 stopped, 4 of 4 ended" in driver.output
    runs, tasks = exact(tmp_path / "pbt-lost", 4)
    assert sorted(run["infra_retries"] for run in runs.values()) == [2] * 4
    # one exploit a boundary (quantile 0.25 of 4), each after a ranking of the whole population
    assert sorted(row["task"] for row in tasks.values() if row["parent_trial_id"]) == [1, 2]
    assert [row["ranked_among"] for row in tasks.values() if row["task"] > 0] == [4] * 8
    loaded = load_all(tmp_path / "pbt-lost")
    for trial_id in loaded.runs["trial_id"]:
        assert list(analysis_adaptive.lineage(loaded.tasks, trial_id)["task"]) == [0, 1, 2]


def test_a_trial_s_own_error_stays_failed_on_rerun_and_retry_errored_resumes_it(cluster, s3, tmp_path):
    workers(cluster, 2)
    name, exp = "own-error", tmp_path / "own-error"
    driver = failing("raise:2:99:0.1", "full_grid", tmp_path, s3, cluster, name, *GRID, "--max-failures", "1")
    assert driver.wait(timeout=240) == 0, driver.output
    assert "1 ok, 1 error, 0 stopped, 2 of 2 ended" in driver.output
    runs, tasks = exact(exp, 2)
    failed = next(run for run in runs.values() if run["status"] == "error")
    assert (failed["failure"], failed["error_type"], failed["error"], failed["tasks_done"], failed["infra_retries"]) \
        == ("own", "RuntimeError", "RuntimeError: simulated crash in task 2", 2, 0)

    rerun = Driver(argv("full_grid", tmp_path, s3, cluster, name, *GRID), tmp_path, cluster.env)  # the cause fixed
    assert rerun.wait(timeout=240) == 0, rerun.output
    assert "resuming 0 errored trial(s)" in rerun.output and "1 stay failed" in rerun.output
    assert exact(exp, 2)[0][(failed["trial_id"],)]["status"] == "error"

    retried = Driver(argv("full_grid", tmp_path, s3, cluster, name, *GRID, "--retry-errored"), tmp_path, cluster.env)
    assert retried.wait(timeout=240) == 0, retried.output
    assert "resuming 1 errored trial(s) from their checkpoints (--retry-errored)" in retried.output
    assert "2 ok, 0 error, 0 stopped, 2 of 2 ended" in retried.output
    after_runs, after_tasks = exact(exp, 2)
    trial_id = failed["trial_id"]
    assert after_runs[(trial_id,)]["tasks_done"] == 3
    for task in (0, 1):  # resumed from its checkpoint: the tasks learned before are kept, not relearned
        assert after_tasks[(trial_id, task)]["created_at"] == tasks[(trial_id, task)]["created_at"]


def test_a_sigkilled_worker_is_the_infrastructure_s_retried_and_past_the_bound_resumed_on_rerun(cluster, s3, tmp_path):
    workers(cluster, 2)
    name, exp = "oom", tmp_path / "oom"
    options = ["--num-tasks", "3", "--growth", "random", "--sparse-init", "uniform", "--density", "0.2",
               "--max-failures", "0"]
    # Killed at task 1 three times: the first is retried, the second is past --max-infra-retries 1 and counts, and
    # --max-failures 0 leaves it failed, for the infrastructure.
    driver = failing("sigkill:1:3", "full_grid", tmp_path, s3, cluster, name, *options, "--max-infra-retries", "1")
    assert driver.wait(timeout=240) == 0, driver.output
    assert "0 ok, 1 error, 0 stopped, 1 of 1 ended" in driver.output
    runs, tasks = exact(exp, 1)
    ((trial_id,), run), = runs.items()
    assert (run["failure"], run["error_type"], run["infra_retries"], run["tasks_done"]) == (
        "infrastructure", "ActorDiedError", 1, 1)

    rerun = Driver(argv("full_grid", tmp_path, s3, cluster, name, *options), tmp_path, cluster.env)
    assert rerun.wait(timeout=240) == 0, rerun.output
    assert "resuming 1 errored trial(s) from their checkpoints (those lost to the infrastructure)" in rerun.output
    assert "1 ok, 0 error, 0 stopped, 1 of 1 ended" in rerun.output
    after_runs, after_tasks = exact(exp, 1)
    assert after_runs[(trial_id,)]["tasks_done"] == 3
    assert after_tasks[(trial_id, 0)]["created_at"] == tasks[(trial_id, 0)]["created_at"]

