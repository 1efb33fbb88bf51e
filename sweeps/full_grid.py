"""The paper's factorial grid on Ray Tune: sparse_init x growth x density x update_frequency x split x seeds.

  python sweeps/full_grid.py --preset quick              # 24 small trials, minutes on a laptop CPU
  python sweeps/full_grid.py --dry-run                   # the paper grid: 144 trials per seed
  python sweeps/full_grid.py --growth momentum gradient --density 0.1 --seeds 0 1 2 --gpus-per-trial 0.25

Every trial's per-task metrics land in <results>/tasks and one row per trial in <results>/runs
(Parquet). Rerunning the same command (same --name) resumes: finished trials are not rerun,
unfinished ones continue from their last task checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python sweeps/full_grid.py` from a checkout

from cldst.config import RunConfig  # noqa: E402
from sweeps import common, experiment  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = common.parser("full_grid.py", __doc__)
    common.add_axis_options(parser, common.AXES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one grid per seed (default: 0)")
    return parser


def grid(fixed: dict, axes: dict[str, list]) -> list[dict]:
    """Every point of the factorial grid, as RunConfig field dicts."""
    return [{**fixed, **dict(zip(axes, values, strict=True))} for values in itertools.product(*axes.values())]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.check_options(args)
    fixed = common.fixed_config(args)
    axes = {**common.axes(args, common.AXES), "seed": list(dict.fromkeys(args.seeds))}
    points = grid(fixed, axes)
    first = common.check_configs(points)
    seeds = len(axes["seed"])
    print(f"{args.preset}: {len(points) // seeds} trials per seed x {seeds} seed{'s' * (seeds > 1)} = "
          f"{len(points)} trials ({first.benchmark}, {first.net}, {first.epochs} epochs per task, "
          f"batch {first.batch_size})")
    for name, values in axes.items():
        print(f"  {name}: {' '.join(str(v) for v in values)}")
    if args.dry_run:
        return 0
    exp, bench = experiment.prepare(args, first)
    experiment.claim(exp, {"script": "full_grid", "fixed": fixed, "axes": axes})
    print(f"results -> {exp.results_dir}; Ray state -> {exp.tune_path}", flush=True)
    common.start_ray(args)
    from ray import tune

    param_space = {**fixed, **{name: tune.grid_search(values) for name, values in axes.items()}}
    tasks = sum(RunConfig.from_dict(point).resolve().num_tasks for point in points)  # the splits may differ
    common.run(args, exp, bench, param_space, tasks=tasks)
    return common.summarize(exp, len(points))


if __name__ == "__main__":
    sys.exit(main())
