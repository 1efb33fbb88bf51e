"""What a sweep prints of Ray Tune's own lines (sweeps.ray_logs.tune_logs), the checkpoints it keeps on remote
storage, and how its workers end on SIGTERM (sweeps.cluster.exit_quietly_on_sigterm). The same on a real
cluster with S3: tests/test_s3_cluster.py."""

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeps import common, ray_logs  # noqa: E402

FREQUENT = ("Experiment state snapshotting has been triggered multiple times in the last 5.0 seconds and may "
            "become a bottleneck.")


class Seen(logging.Handler):
    """The records a logger lets through its filters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def seen():
    handlers = {}

    def on(name: str) -> Seen:
        handlers[name] = handlers.get(name) or Seen()
        logging.getLogger(name).addHandler(handlers[name])
        return handlers[name]

    yield on
    for name, handler in handlers.items():
        logging.getLogger(name).removeHandler(handler)


def test_tunes_snapshot_lines_become_one_warning_and_one_summary_line(seen, capsys):
    snapshots = logging.getLogger(ray_logs.SNAPSHOT_LOGGER)
    through = seen(ray_logs.SNAPSHOT_LOGGER)
    with ray_logs.tune_logs("s3://bucket/ray/sweep") as cost:
        for seconds in (0.5, 2.5, 4.0):  # 7 s within a minute: over 10% of it
            snapshots.debug(f"Experiment state snapshotting took {seconds:.2f} seconds. Adjusting snapshotting period")
            snapshots.warning(FREQUENT)
        snapshots.warning("Saving the experiment state took ~40.00 seconds, which may be a performance bottleneck.")
        snapshots.debug("Copied ['experiment_state.json'] from storage")
    assert through.messages == ["Saving the experiment state took ~40.00 seconds, which may be a performance "
                                "bottleneck."]  # Tune's other warnings pass; its repeated one and debug lines do not
    out = capsys.readouterr().out.splitlines()
    assert (cost.count, cost.seconds) == (3, 7.0)
    assert len(out) == 2 and out[0].startswith("warning: saving the sweep's state to s3://bucket/ray/sweep took 7.0 s")
    assert out[1] == "Ray Tune state saved to s3://bucket/ray/sweep 3 times, 7.0 s of the driver's time"
    assert snapshots.level == logging.NOTSET and not snapshots.filters  # as it was


def test_the_warning_needs_a_tenth_of_the_last_minute_and_a_local_storage_gets_no_summary(capsys):
    cost = ray_logs.SnapshotCost("/shared/ray/sweep")
    for minute in range(3):  # 5 s each minute: under the share
        cost.add(5.0, now=60.0 * minute)
    cost.add(1.5, now=170.0)  # 6.5 s in the last 60 s
    assert cost.warned and "took 6.5 s of the driver's last 60 s (2 snapshots)" in capsys.readouterr().out
    cost.add(30.0, now=171.0)
    assert capsys.readouterr().out == ""  # once
    with ray_logs.tune_logs("/shared/ray/sweep"):
        logging.getLogger(ray_logs.SNAPSHOT_LOGGER).debug("Experiment state snapshotting took 0.02 seconds.")
    assert capsys.readouterr().out == ""


def deleting(path: str) -> None:
    """Raises as Tune's _delete_fs_path does for a checkpoint already gone."""

    def _delete_fs_path() -> None:
        raise FileNotFoundError(f"Path not found: {path}")

    _delete_fs_path()


def test_lines_that_need_nothing_done_are_dropped_and_the_others_kept(seen):
    trial_files, controller = seen("ray.tune.logger.logger"), seen("ray.tune.execution.tune_controller")
    with ray_logs.tune_logs("s3://bucket/ray/sweep"):
        logging.getLogger("ray.tune.logger.logger").warning("Remote file not found: bucket/ray/sweep/t/result.json")
        logging.getLogger("ray.tune.logger.logger").warning("Error downloading bucket/ray/sweep/t/result.json")
        for cause in (lambda: deleting("checkpoint_000001"), lambda: open("/nonexistent/state.pt"),
                      lambda: 1 / 0):
            try:
                cause()
            except Exception:
                logging.getLogger("ray.tune.execution.tune_controller").exception(
                    "Trial %s: Error handling checkpoint %s", "trainable_1", "checkpoint_000003")
    assert trial_files.messages == ["Error downloading bucket/ray/sweep/t/result.json"]
    # Only the deletion of a checkpoint already gone is dropped: another missing file, another error, stay.
    assert len(controller.messages) == 2


def test_remote_storage_keeps_two_checkpoints_per_trial_a_local_one_and_pbt_as_before():
    from ray.tune.schedulers import PopulationBasedTraining

    pbt = PopulationBasedTraining(metric="avg_acc", mode="max", hyperparam_mutations={"lr": [1e-3, 1e-2]})
    assert common.checkpoints_kept(None, "s3://bucket/ray") == common.REMOTE_CHECKPOINTS_KEPT == 2
    assert common.checkpoints_kept(None, "/shared/ray") == common.CHECKPOINTS_KEPT == 1
    assert common.checkpoints_kept(pbt, "s3://bucket/ray") == common.PBT_CHECKPOINTS_KEPT


LOST_EXIT = textwrap.dedent("""
    import gc, sys, weakref
    sys.path.insert(0, sys.argv[1])
    from sweeps import cluster
    cluster.exit_quietly_on_sigterm()

    class Thing:
        pass

    def raise_in_callback(_):
        raise {exception}

    thing = Thing()
    ref = weakref.ref(thing, raise_in_callback)
    del thing
    gc.collect()
    print("went on")
""")


@pytest.mark.parametrize("exception, code, went_on", [("SystemExit(1)", 1, False), ("ValueError('kept')", 0, True)])
def test_a_worker_ends_on_an_exit_python_could_not_raise_and_prints_only_other_lost_errors(exception, code, went_on):
    done = subprocess.run([sys.executable, "-c", LOST_EXIT.format(exception=exception), str(REPO)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code and ("went on" in done.stdout) == went_on
    assert ("Exception ignored" in done.stderr) == went_on and ("ValueError: kept" in done.stderr) == went_on
