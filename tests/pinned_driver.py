"""A sweep driver whose trials each run on one node, always, for tests/test_s3_cluster.py.

  PINS=node1,node2 python tests/pinned_driver.py SCRIPT ARGS...   # sweeps/SCRIPT.py's main(ARGS), trials pinned

Trial k (in the order Tune adds them) asks, on top of its CPUs and GPUs, for one unit of the custom resource
PINS[k % len(PINS)], which one worker node of the test cluster offers (tests/shared_nothing.py,
SharedNothingCluster.pin). Tune sets a trial's resources once, as it adds the trial
(ray/tune/experiment/trial.py, create_placement_group_factory), and PBT's exploit keeps them: with two members
on two pinned nodes, every exploit restores a checkpoint the other node saved. (A resource function given to
tune.with_resources could not count trials: Tune unpickles a fresh copy of it for each one.)
"""

import importlib
import itertools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray.tune.execution.placement_groups import PlacementGroupFactory  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402

create_placement_group_factory = Trial.create_placement_group_factory
PINS, ADDED = os.environ["PINS"].split(","), itertools.count()


def pinned(trial: Trial) -> None:
    create_placement_group_factory(trial)
    (bundle,) = trial.placement_group_factory.bundles
    trial.placement_group_factory = PlacementGroupFactory([{**bundle, PINS[next(ADDED) % len(PINS)]: 1}])


if __name__ == "__main__":
    script, *argv = sys.argv[1:]
    Trial.create_placement_group_factory = pinned
    sys.exit(importlib.import_module(f"sweeps.{script}").main(argv))
