"""Ray's own driver-side lines, kept to what a user can act on, each said once and in our words.

`tune_logs`: Tune's repeated warnings about frequent experiment-state snapshots become one line of ours, said once,
when saving that state took a real share of the driver's time; a sweep on remote storage ends with one line on what
saving its state there cost; the lines that need nothing done (NOTHING_TO_DO) are dropped. `dropped`: one such
line, for the duration of a block (LOCAL_TOKEN_NOTICE, as a local Ray starts).
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from sweeps.experiment import is_remote

SNAPSHOT_LOGGER = "ray.tune.execution.experiment_state"  # Tune's experiment-state snapshots
# Tune's debug line after each snapshot while it sets the snapshot period itself (TUNE_GLOBAL_CHECKPOINT_S unset):
# the driver's seconds in it, including the wait for the previous upload when num_to_keep forces the snapshot.
SNAPSHOT_TOOK = re.compile(r"Experiment state snapshotting took ([0-9.]+) seconds")
FREQUENT_SNAPSHOTS = "Experiment state snapshotting has been triggered multiple times"
# Lines that need nothing done: (logger, start of the message's format, and for an error: the function in its
# traceback).
NOTHING_TO_DO = (
    # A restored trial (a retry, a PBT exploit or unpause) fetches its own result.json and progress.csv from the
    # storage to append to; before a snapshot has uploaded them they are not there, and Tune goes on with the
    # driver's copy, which the next snapshot uploads. Once per restore.
    ("ray.tune.logger.logger", "Remote file not found: ", None),
    # A resumed sweep's state may list a checkpoint that the killed driver had already deleted (it was past
    # num_to_keep); deleting it again finds it gone (FileNotFoundError in Tune's _delete_fs_path), which is what
    # was wanted: the new checkpoint is registered all the same.
    ("ray.tune.execution.tune_controller", "Trial %s: Error handling checkpoint", "_delete_fs_path"),
)
# Ray's notice, as it starts a local Ray (2.59+), that it turned token auth on: cldst wants it on and makes the token
# file private (sweeps.cluster.protect_token_file), so the notice leaves the user nothing to do.
LOCAL_TOKEN_NOTICE = ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled")


class SnapshotCost(logging.Filter):
    """On Tune's snapshot logger: adds up the driver's seconds in experiment-state snapshots, drops Tune's
    warning about frequent snapshots (every few seconds, naming settings a sweep's user does not set), and
    prints one warning of ours, once, when the snapshots took more than `share` of the driver's last `window`
    seconds. Records below `level` other than those it reads are dropped (the logger is lowered to DEBUG)."""

    def __init__(self, storage: str, share: float = 0.1, window: float = 60.0, level: int = logging.WARNING) -> None:
        super().__init__()
        self.storage, self.share, self.window, self.level = storage, share, window, level
        self.count, self.seconds, self.warned = 0, 0.0, False
        self._recent: deque[tuple[float, float]] = deque()  # (when, seconds) within the window

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        took = SNAPSHOT_TOOK.match(message)
        if took:
            self.add(float(took[1]), time.monotonic())
            return False
        return not message.startswith(FREQUENT_SNAPSHOTS) and record.levelno >= self.level

    def add(self, seconds: float, now: float) -> None:
        self.count += 1
        self.seconds += seconds
        self._recent.append((now, seconds))
        while self._recent[0][0] <= now - self.window:  # those a whole window old are out
            self._recent.popleft()
        spent = sum(s for _, s in self._recent)
        if not self.warned and spent > self.share * self.window:
            self.warned = True
            print(f"warning: saving the sweep's state to {self.storage} took {spent:.1f} s of the driver's last "
                  f"{self.window:.0f} s ({len(self._recent)} snapshots), time in which it handles no trial; run the "
                  f"driver near that storage, or see docs/guides/cluster.md, 'Storage on a cluster'", flush=True)

    def summary(self) -> str:
        return (f"Ray Tune state saved to {self.storage} {self.count} times, {self.seconds:.1f} s of the driver's "
                f"time")


class _Drop(logging.Filter):
    """Drops the records whose message format starts with `start`; with `through`, only those whose exception is
    a FileNotFoundError raised in that function."""

    def __init__(self, start: str, through: str | None) -> None:
        super().__init__()
        self.start, self.through = start, through

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.start):
            return True
        if self.through is None:
            return False
        error = record.exc_info[1] if record.exc_info else None
        frames = traceback.extract_tb(error.__traceback__) if isinstance(error, FileNotFoundError) else []
        return not any(frame.name == self.through for frame in frames)


@contextmanager
def dropped(logger_name: str, start: str, through: str | None = None) -> Iterator[None]:
    """For the duration of the block, `logger_name`'s records that _Drop(start, through) matches are dropped."""
    logger, drop = logging.getLogger(logger_name), _Drop(start, through)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextmanager
def tune_logs(storage: str) -> Iterator[SnapshotCost]:
    """For the duration of the block: Tune's snapshot lines go through a SnapshotCost, and the lines that need
    nothing done (NOTHING_TO_DO) are dropped. A sweep on remote storage (a URI) ends with the snapshots' cost."""
    snapshots = logging.getLogger(SNAPSHOT_LOGGER)
    cost = SnapshotCost(storage, level=snapshots.getEffectiveLevel())
    level = snapshots.level
    snapshots.setLevel(logging.DEBUG)
    snapshots.addFilter(cost)
    try:
        with ExitStack() as drops:
            for line in NOTHING_TO_DO:
                drops.enter_context(dropped(*line))
            yield cost
    finally:
        snapshots.removeFilter(cost)
        snapshots.setLevel(level)
        if is_remote(storage) and cost.count:
            print(cost.summary(), flush=True)
