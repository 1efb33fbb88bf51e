"""Named starting points of a sweep: the RunConfig fields every trial shares and the grid axes it crosses.

Any field of a preset can be overridden (`--set`, `--grid`, `--config`: sweeps/settings.py). Every benchmark the
engine reads has one: the paper's grid on CIFAR-100 and miniImageNet, `quick` on the bundled digits (no download),
and, named after their benchmark, the others with that benchmark's defaults and its own task split.
"""

from __future__ import annotations

from dataclasses import dataclass

from cldst.config import BENCHMARK_DEFAULTS

AXES = ("sparse_init", "growth", "density", "update_frequency", "num_tasks")  # the grid's shorthand options
AXIS_TYPES = {"density": float, "update_frequency": int, "num_tasks": int}
PAPER_AXES = {"sparse_init": ["uniform", "ERK"], "growth": ["random", "unfired", "momentum", "gradient"],
              "density": [0.2, 0.1, 0.05], "update_frequency": [100, 400], "num_tasks": [5, 10, 20]}
DEFAULT_PRESET = "paper-cifar100"


@dataclass(frozen=True)
class Preset:
    fixed: dict  # RunConfig fields every trial shares; the rest take the benchmark's defaults
    axes: dict  # RunConfig field -> the values the grid crosses


def benchmark_preset(benchmark: str) -> Preset:
    """Init x growth x density of the paper on `benchmark`, at its own update frequency and split: the paper's
    5, 10 and 20 tasks do not all divide 10 classes into tasks of at least 2."""
    defaults = BENCHMARK_DEFAULTS[benchmark]
    return Preset({"benchmark": benchmark}, {**PAPER_AXES, "update_frequency": [defaults["update_frequency"]],
                                             "num_tasks": [defaults["num_tasks"]]})


PRESETS = {
    # The reference's nets and batch sizes (RunConfig's benchmark defaults), 100 epochs per task as in the paper.
    "paper-cifar100": Preset({"benchmark": "cifar100", "epochs": 100}, PAPER_AXES),
    "paper-miniimagenet": Preset({"benchmark": "miniimagenet", "epochs": 100}, PAPER_AXES),
    # The bundled digits set, a small MLP, 5 tasks x 2 classes: the whole grid runs on a laptop CPU in minutes.
    "quick": Preset({"benchmark": "digits", "net": "mlp", "epochs": 3},
                    {**PAPER_AXES, "update_frequency": [10], "num_tasks": [5]}),
    **{name: benchmark_preset(name) for name in ("cifar10", "tinyimagenet", "mnist", "fashion-mnist", "synthetic")},
}
