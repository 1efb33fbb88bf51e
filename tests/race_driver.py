"""A sweep driver that stops inside a race window, for tests/test_races.py.

  python tests/race_driver.py HOOK SCRIPT ARGS...   # sweeps/SCRIPT.py's main(ARGS), plus the Tune callback HOOK

HOOK writes the JSON file $RACE_MARKER at the window, then blocks the driver until $RACE_RELEASE exists (the test
kills the driver, or interrupts it and releases it). PBT members rank by arrival here (the later a member reports a
task, the lower it ranks), so each synchronisation's last two reporters are the ones exploited.
"""

import importlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from ray import tune  # noqa: E402

from cldst.tune import CHECKPOINT_FILE  # noqa: E402
from sweeps import adaptive, common  # noqa: E402

BLOCK_S = 300  # a test that never acts must not leave the driver behind for long


def block(info: dict) -> None:
    Path(os.environ["RACE_MARKER"]).write_text(json.dumps(info))
    release, deadline = Path(os.environ["RACE_RELEASE"]), time.monotonic() + BLOCK_S
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class ExploitedWhilePaused(tune.Callback):
    """Blocks as Tune starts a member that PBT exploited while it was paused (not at its own report). Tune has set
    the donor's config and checkpoint on it and, with TUNE_GLOBAL_CHECKPOINT_S=0, saved its state at every step."""

    def __init__(self) -> None:
        self.last_reporter: dict[int, str] = {}  # tasks_done -> the member that reported it last
        self.blocked = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last_reporter[result["tasks_done"]] = trial.trial_id

    def on_trial_start(self, iteration, trials, trial, **info):
        saved = trial.latest_checkpoint_result
        if self.blocked or saved is None or saved.checkpoint.path.startswith(trial.storage.trial_fs_path + "/"):
            return  # not set to continue from another member's checkpoint
        done = saved.metrics["tasks_done"]
        if self.last_reporter.get(done) == trial.trial_id:
            return  # exploited at its own report
        self.blocked = True
        donor = torch.load(Path(saved.checkpoint.path) / CHECKPOINT_FILE, weights_only=True)["trial_id"]
        block({"member": trial.trial_id, "donor": donor, "tasks_done": done})


class CheckpointDeleted(tune.Callback):
    """Blocks once Tune has registered a trial's checkpoint of its second task, deleting the first one
    (num_to_keep 1), and before it saves the state that names the new one: the state on storage (once Tune's
    background upload of the last save ends) still names the deleted checkpoint."""

    def __init__(self) -> None:
        self.blocked = False

    def on_trial_save(self, iteration, trials, trial, **info):
        if self.blocked or trial.last_result.get("tasks_done") != 2:
            return
        self.blocked = True
        staged, stored = Path(trial.storage.experiment_driver_staging_path), Path(trial.storage.experiment_fs_path)
        while any(not (stored / state.name).exists() or (stored / state.name).read_bytes() != state.read_bytes()
                  for state in staged.glob("experiment_state-*.json")):
            time.sleep(0.05)
        block({"trial": trial.trial_id, "checkpoint": trial.checkpoint.path})


HOOKS = {"exploited-while-paused": ExploitedWhilePaused, "checkpoint-deleted": CheckpointDeleted}

if __name__ == "__main__":
    hook, script, *argv = sys.argv[1:]
    arrivals = itertools.count()
    adaptive.rank_score = lambda result, capacity_weight: -next(arrivals)
    loggers = common.logger_callbacks
    common.logger_callbacks = lambda args, exp: [*loggers(args, exp), HOOKS[hook]()]
    sys.exit(importlib.import_module(f"sweeps.{script}").main(argv))
