"""The faults of the Reliability issue, each survived on a local multi-node Ray cluster (a head with no CPUs
and worker nodes of 1 CPU, all on this machine; see tests/ray_cluster.py):

1. a worker node dies mid-trial: the trial is retried on the live node from its last task checkpoint;
2. the driver is SIGKILLed mid-sweep: the same command finishes it, rerunning and duplicating nothing;
3. a trial's loss becomes NaN, another trial raises: both `error` with their message, the others `ok`;
4. a stray and a truncated file land in the experiment folder: the summary and the report list them;
5. the results path cannot be written: exit 2 before Ray starts; the disk fills up mid-sweep: the sweep
   stops with one line, no part file is corrupt, and the same command finishes it.

Drivers run as subprocesses (`python sweeps/full_grid.py ...`, as a user would), small quick-preset sweeps
on the bundled digits. The bad-input side of the issue is tests/test_bad_input.py.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from ray_cluster import FAST_NODE_DEATH, LocalCluster
from read_only import needs_read_only_proc

from cldst import results
from cldst.schema import COMPACT_PATTERN, PART_PATTERN
from sweeps import full_grid, search

REPO = Path(__file__).resolve().parents[1]
FULL_GRID = str(REPO / "sweeps" / "full_grid.py")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head that runs no trials (0 CPUs); each test asks `workers()` for the 1-CPU worker nodes it needs."""
    with LocalCluster(tmp_path_factory.mktemp("cluster-logs"), **FAST_NODE_DEATH) as local:
        local.start_head(num_cpus=0)
        local.wait_for_nodes(1)
        yield local


def workers(cluster: LocalCluster, count: int) -> list[subprocess.Popen]:
    """`count` live worker nodes, starting new ones for those killed by an earlier test."""
    live = [node for node in cluster.nodes[1:] if node.poll() is None]
    cluster.wait_for_nodes(1 + len(live))  # a node killed by the last test is out of the count
    while len(live) < count:  # one at a time: raylets starting together on 2 busy cores can time out
        live.append(cluster.add_node())
        cluster.wait_for_nodes(1 + len(live))
    return live


def sweep(tmp_path: Path, name: str, epochs: int, num_tasks: int, *extra: str) -> list[str]:
    return ["--preset", "quick", "--epochs", str(epochs), "--num-tasks", str(num_tasks), "--growth", "random",
            "--sparse-init", "uniform", "--name", name, "--results", str(tmp_path / name),
            "--storage", str(tmp_path / "ray"), *extra]


class Driver:
    """A sweep driver in its own session (its output in a file), as a user starts one."""

    started: list["Driver"] = []

    def __init__(self, command: list[str], tmp_path: Path, env: dict) -> None:
        self.log = tmp_path / f"driver-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen([sys.executable, *command], cwd=tmp_path, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        Driver.started.append(self)

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            output = self.output
            errors = list(dict.fromkeys(line for line in output.splitlines() if "ERROR" in line or "Error resolving"
                                        in line))[:20]  # what the tail may have scrolled past
            pytest.fail(f"the driver did not finish in {timeout:.0f}s; its error lines:\n" + "\n".join(errors) +
                        f"\n... its output's end:\n{output[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the driver, then anything it left in its session."""
        self.process.kill()
        self.process.wait(timeout=30)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait_for(self, condition, timeout: float = 150) -> object:
        """Poll `condition()` until it returns something true; fail if the driver ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            if self.process.poll() is not None:
                pytest.fail(f"the driver ended (rc {self.process.returncode}) too early:\n{self.output[-3000:]}")
            time.sleep(0.2)
        self.kill()
        pytest.fail(f"condition not met in {timeout:.0f}s:\n{self.output[-3000:]}")


@pytest.fixture(autouse=True)
def no_driver_left():
    """A test that fails half-way must not leave its driver running."""
    yield
    while Driver.started:
        driver = Driver.started.pop()
        if driver.process.poll() is None:
            driver.kill()


def rows(exp: Path, kind: str) -> list[dict]:
    """The rows so far (a sweep just started may have no results folder yet)."""
    try:
        return getattr(results.load(exp, on_bad="skip"), kind).to_pylist()
    except results.ResultsError:
        return []


def by_key(table: list[dict], *key: str) -> dict:
    keyed = {tuple(row[k] for k in key): row for row in table}
    assert len(keyed) == len(table), f"duplicate {key} rows"
    return keyed


def reports(storage: Path, trial_id: str) -> list[dict]:
    """Tune's result.json of a trial: one line per report (= per task learned)."""
    (path,) = [p for p in storage.glob("*/result.json") if f"_{trial_id}_" in p.parent.name]
    return [json.loads(line) for line in path.read_text().splitlines()]


def no_temp_or_stray_files(exp: Path) -> None:
    """Only part files and (once a sweep has ended) compacted ones: no temp file, nothing a writer left."""
    for kind in results.KINDS:
        names = [p.name for p in (exp / kind).iterdir()] if (exp / kind).is_dir() else []
        assert all(PART_PATTERN.match(name) or COMPACT_PATTERN.match(name) for name in names), names


# ---------------------------------------------------------------- 1. a worker node dies mid-trial
# tests/test_s3_cluster.py, on nodes that share no filesystem (the real case): the trial resumes on the other node
# from its S3 checkpoint, at its next task.


# ---------------------------------------------------------------- 2. the driver is SIGKILLed mid-sweep

@pytest.mark.cluster
def test_a_killed_driver_s_sweep_finishes_when_rerun_without_rerunning_or_duplicating(cluster, tmp_path):
    workers(cluster, 2)
    exp = tmp_path / "killed"
    argv = [FULL_GRID, *sweep(tmp_path, "killed", 60, 4, "--density", "0.2", "0.1", "0.05",
                              "--address", cluster.address)]
    driver = Driver(argv, tmp_path, cluster.env)

    def some_ended_and_one_running() -> bool:
        ended = {r["trial_id"] for r in rows(exp, "runs")}
        return bool(ended) and any(t["trial_id"] not in ended for t in rows(exp, "tasks"))

    driver.wait_for(some_ended_and_one_running)
    driver.kill()
    runs_before, tasks_before = by_key(rows(exp, "runs"), "trial_id"), by_key(rows(exp, "tasks"), "trial_id", "task")
    assert 1 <= len(runs_before) < 3
    storage = tmp_path / "ray" / "killed"
    reports_before = {trial_id: reports(storage, trial_id) for (trial_id,) in runs_before}

    again = Driver(argv, tmp_path, cluster.env)  # the same command
    assert again.wait(timeout=180) == 0, again.output
    assert "resuming killed" in again.output and "3 ok, 0 error, 0 stopped, 3 of 3 ended" in again.output
    loaded = results.load(exp)  # every part file whole and readable: raises otherwise
    no_temp_or_stray_files(exp)
    runs, tasks = by_key(loaded.runs.to_pylist(), "trial_id"), by_key(loaded.tasks.to_pylist(), "trial_id", "task")
    assert len(runs) == 3 and {r["status"] for r in runs.values()} == {"ok"}
    assert sorted(tasks) == sorted((trial_id, t) for (trial_id,) in runs for t in range(4))
    for key, row in runs_before.items():  # trials that had ended were not run again
        assert runs[key]["created_at"] == row["created_at"]
        assert reports(storage, key[0]) == reports_before[key[0]]
    last_learned = {}
    for trial_id, task in tasks_before:
        last_learned[trial_id] = max(task, last_learned.get(trial_id, -1))
    for (trial_id, task), row in tasks_before.items():
        if (trial_id,) in runs_before or task < last_learned[trial_id]:
            assert tasks[(trial_id, task)]["created_at"] == row["created_at"], (trial_id, task)
        # else: the last task of a trial cut mid-run may be relearned if the kill came before Tune saved its
        # checkpoint (it then replaces its row: never twice)


# ---------------------------------------------------------------- 3. NaN loss and a raising trial

FAULTY_SWEEP = textwrap.dedent('''
    """A sweep through sweeps/common of 6 trials: lr 1e30 makes the loss NaN; seed 7 raises in task 1."""
    import sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[1])
    from ray import tune

    from cldst import continual
    from cldst import tune as cldst_tune
    from cldst.data import load_benchmark
    from sweeps import common, experiment, full_grid

    trainable = cldst_tune.trainable


    def crashes_in_task_1_if_seed_7(config, bench):
        if config["seed"] != 7:
            return trainable(config, bench)
        learn_task = continual.learn_task

        def crash(cfg, model, masking, train, task, *rest):
            if task == 1:
                raise RuntimeError("simulated crash in task 1")
            return learn_task(cfg, model, masking, train, task, *rest)

        continual.learn_task = crash
        try:
            trainable(config, bench)
        finally:
            continual.learn_task = learn_task  # the actor is reused by the next trial


    cldst_tune.trainable = crashes_in_task_1_if_seed_7
    results_dir, address = Path(sys.argv[2]), sys.argv[3]
    args = full_grid.build_parser().parse_args(["--address", address, "--max-failures", "1"])
    exp = experiment.Experiment("faulty", results_dir, str(results_dir.parent / "ray"))
    space = {"benchmark": "digits", "epochs": 2, "num_tasks": 2, "lr": tune.grid_search([1e-2, 1e30]),
             "seed": tune.grid_search([0, 1, 7])}
    common.start_ray(args)
    common.run(args, exp, load_benchmark("digits"), space)
    sys.exit(common.summarize(exp, expected=6))
''')


@pytest.mark.cluster
def test_nan_loss_and_a_raising_trial_are_errors_with_their_message_and_the_others_finish(cluster, tmp_path):
    workers(cluster, 2)
    script = tmp_path / "faulty_sweep.py"
    script.write_text(FAULTY_SWEEP)
    exp = tmp_path / "faulty"
    driver = Driver([str(script), str(REPO), str(exp), cluster.address], tmp_path, cluster.env)
    assert driver.wait(timeout=180) == 0, driver.output
    assert "2 ok, 4 error, 0 stopped, 6 of 6 ended" in driver.output
    runs = by_key(rows(exp, "runs"), "lr", "seed")
    tasks = rows(exp, "tasks")
    for (lr, seed), run in runs.items():
        done = sorted(t["task"] for t in tasks if t["trial_id"] == run["trial_id"])
        if lr == 1e30:
            assert run["status"] == "error" and run["error"].startswith("TrainingError: loss became nan in task 0")
            assert run["tasks_done"] == 0 and done == [] and run["acc"] is None
        elif seed == 7:
            assert (run["status"], run["error"]) == ("error", "RuntimeError: simulated crash in task 1")
            assert run["tasks_done"] == 1 and done == [0]  # the task learned before the crash is kept
        else:
            assert (run["status"], run["error"], run["tasks_done"]) == ("ok", None, 2) and done == [0, 1]
            assert len(run["acc_matrix"]) == 2 and run["acc"] > 50
    assert "error in" in driver.output and "simulated crash in task 1" in driver.output


# ---------------------------------------------------------------- 4. stray and truncated files in the results

@pytest.mark.cluster
def test_stray_and_truncated_files_are_reported_by_the_summary_and_the_report_not_merged(cluster, tmp_path, capsys):
    workers(cluster, 2)
    exp = tmp_path / "messy"
    driver = Driver([FULL_GRID, *sweep(tmp_path, "messy", 20, 3, "--density", "0.1", "0.2",
                                       "--address", cluster.address)], tmp_path, cluster.env)
    first = driver.wait_for(lambda: sorted((exp / "tasks").glob("part-*.parquet")))[0]
    # Mid-sweep, another tool leaves a note and a half-copied part file in the experiment folder.
    stray, truncated = exp / "tasks" / "notes.txt", exp / "runs" / "part-copy.parquet"
    stray.write_text("copied by hand")
    truncated.parent.mkdir(exist_ok=True)  # no trial has ended yet
    truncated.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    assert driver.wait(timeout=180) == 0, driver.output
    summary = driver.output.split("Parquet results:")[1]
    assert "2 ok, 0 error, 0 stopped, 2 of 2 ended" in summary
    assert "warning: 2 file(s)" in summary and f"{stray}: stray file" in summary
    assert f"{truncated}: not a readable Parquet file" in summary
    with pytest.raises(results.ResultsError):  # the strict reader refuses the folder ...
        results.load(exp)
    loaded = results.load(exp, on_bad="skip")  # ... the lenient one reads the rest and lists them
    assert loaded.runs.num_rows == 2 and loaded.tasks.num_rows == 6
    assert sorted(path for path, _ in loaded.skipped) == sorted([str(stray), str(truncated)])

    from analysis.report import main as report

    assert report([str(exp), "--out", str(tmp_path / "report")]) == 0
    assert "2 trials (2 ok, 0 error, 0 stopped, 0 running)" in capsys.readouterr().out
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Unreadable result files left out (2)" in text
    assert f"`{stray}`: {stray}: stray file" in text and f"`{truncated}`: {truncated}: not a readable" in text


# ---------------------------------------------------------------- 5. unwritable results, full disk

@pytest.fixture
def blocked(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    return blocker


@pytest.mark.parametrize("main", [full_grid.main, search.main], ids=["full_grid", "search"])
@pytest.mark.parametrize("where, message", [
    pytest.param(lambda tmp, blocker: ["--results", str(blocker / "r")],
                 "--results: {tmp}/a-file/r: cannot be created", id="results-under-a-file"),
    pytest.param(lambda tmp, blocker: ["--results", str(blocker)],
                 "--results: {tmp}/a-file: exists and is not a directory", id="results-is-a-file"),
    pytest.param(lambda tmp, blocker: ["--results", "/proc/cldst-results"],
                 "--results: /proc/cldst-results: not writable", id="results-in-proc", marks=needs_read_only_proc),
    pytest.param(lambda tmp, blocker: ["--results", str(tmp / "r"), "--storage", str(blocker / "ray")],
                 "--storage: {tmp}/a-file/ray: cannot be created", id="storage-under-a-file"),
])
def test_an_unwritable_results_path_fails_before_ray_starts(main, where, message, tmp_path, blocked, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "quick", *where(tmp_path, blocked)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: " + message.format(tmp=tmp_path)), err
    assert sorted(tmp_path.rglob("*")) == before and not ray.is_initialized()


def test_a_nearly_full_disk_fails_before_ray_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(results.shutil, "disk_usage", lambda path: SimpleNamespace(free=2**20))
    with pytest.raises(SystemExit) as exit_info:
        full_grid.main(["--preset", "quick", "--results", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: --results: {tmp_path}/r: only 1 MiB free on its disk; free some " \
                                      f"space first\n"
    assert list(tmp_path.iterdir()) == [] and not ray.is_initialized()


DISK_FULL = textwrap.dedent('''
    """sweeps/full_grid.py, but the results disk fills up after 3 part files: every later write fails halfway."""
    import errno
    import sys

    import pyarrow.parquet as pq

    sys.path.insert(0, sys.argv[1])
    from sweeps import full_grid

    write_table, calls = pq.write_table, []


    def fills_up(table, where, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            where.write(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_table(table, where, **kwargs)


    pq.write_table = fills_up
    sys.exit(full_grid.main(sys.argv[2:]))
''')


@pytest.mark.cluster
def test_a_full_disk_mid_sweep_stops_it_cleanly_and_the_rerun_finishes_it(cluster, tmp_path):
    workers(cluster, 2)
    script = tmp_path / "disk_full.py"
    script.write_text(DISK_FULL)
    exp = tmp_path / "full"
    argv = sweep(tmp_path, "full", 20, 4, "--density", "0.1", "0.2", "--address", cluster.address)
    driver = Driver([str(script), str(REPO), *argv], tmp_path, cluster.env)
    assert driver.wait(timeout=180) == 1, driver.output
    # One line says what went wrong (Ray may log its own shutdown noise after it).
    (line,) = [line for line in driver.output.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: cannot write results under {exp} (No space left on device); the sweep "
                           "stopped with every file written so far intact"), line
    before = results.load(exp)  # what was written is whole: the strict reader accepts it
    no_temp_or_stray_files(exp)
    assert before.tasks.num_rows == 3 and before.runs.num_rows == 0
    tasks_before = by_key(before.tasks.to_pylist(), "trial_id", "task")

    again = Driver([FULL_GRID, *argv], tmp_path, cluster.env)  # space freed: the same command
    assert again.wait(timeout=180) == 0, again.output
    loaded = results.load(exp)
    runs, tasks = by_key(loaded.runs.to_pylist(), "trial_id"), by_key(loaded.tasks.to_pylist(), "trial_id", "task")
    assert len(runs) == 2 and {r["status"] for r in runs.values()} == {"ok"}
    assert sorted(tasks) == sorted((trial_id, t) for (trial_id,) in runs for t in range(4))  # no gap, no twice
    for key, row in tasks_before.items():
        assert tasks[key]["created_at"] == row["created_at"], key
