"""A sweep driver whose trials fail on cue, for tests/test_lost_nodes.py.

  FAULT=KIND:TASK:TIMES[:DENSITY] python tests/failing_driver.py SCRIPT ARGS...   # sweeps/SCRIPT.py's main(ARGS)

Each trial (only those of density DENSITY, if given) fails as it starts task TASK, on its first TIMES attempts at
it, then learns it. KIND: `unavailable` raises Ray's ActorUnavailableError, as a lost node's actor does (Ray Tune
may report one node death twice: TIMES 2); `sigkill` kills the trial's worker with SIGKILL, as Ray's memory monitor
or the kernel's OOM killer does; `raise` raises a RuntimeError, the trial's own error. Attempts are counted in
Ray's key-value store, which every node reaches.
"""

import importlib
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray import tune  # noqa: E402
from ray.exceptions import ActorUnavailableError  # noqa: E402
from ray.experimental import internal_kv  # noqa: E402

from cldst import continual  # noqa: E402
from cldst import tune as cldst_tune  # noqa: E402

TRAINABLE = cldst_tune.trainable
KIND, TASK, TIMES, *ONLY = os.environ["FAULT"].split(":")
TASK, TIMES, ONLY = int(TASK), int(TIMES), [float(d) for d in ONLY]


def attempt(trial_id: str) -> int:
    """How many times before this one the trial started task TASK."""
    key = f"cldst-fault:{trial_id}:{TASK}"
    done = int(internal_kv._internal_kv_get(key) or 0)
    internal_kv._internal_kv_put(key, str(done + 1))
    return done


def fail() -> None:
    if KIND == "unavailable":
        raise ActorUnavailableError("the node of this actor died (injected by tests/failing_driver.py)", None)
    if KIND == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"simulated crash in task {TASK}")


def failing(config: dict, bench: object) -> None:
    if ONLY and config["density"] not in ONLY:
        return TRAINABLE(config, bench)
    learn_task, trial_id = continual.learn_task, tune.get_context().get_trial_id()

    def failing_task(cfg, model, masking, train, task, *rest):
        if task == TASK and attempt(trial_id) < TIMES:
            fail()
        return learn_task(cfg, model, masking, train, task, *rest)

    continual.learn_task = failing_task
    try:
        return TRAINABLE(config, bench)
    finally:
        continual.learn_task = learn_task  # the actor is reused by the next trial


failing.__name__ = failing.__qualname__ = TRAINABLE.__name__  # Tune's rerun (Tuner.restore) checks the name


if __name__ == "__main__":
    script, *argv = sys.argv[1:]
    cldst_tune.trainable = failing
    sys.exit(importlib.import_module(f"sweeps.{script}").main(argv))
