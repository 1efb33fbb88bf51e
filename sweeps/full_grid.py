"""A factorial grid on Ray Tune: the preset's axes (the paper's: sparse_init x growth x density x update_frequency x
split), any RunConfig field crossed with --grid or fixed with --set, x seeds.

  python sweeps/full_grid.py --preset quick              # 24 small trials, minutes on a laptop CPU
  python sweeps/full_grid.py --dry-run                   # the paper grid: 144 trials per seed, each listed
  python sweeps/full_grid.py --growth momentum gradient --density 0.1 --seeds 0 1 2 --gpus-per-trial 0.25
  python sweeps/full_grid.py --preset quick --grid lr=0.01,0.003 --set optimizer=sgd
  python sweeps/full_grid.py --config examples/sweeps/quick-lr.toml --seeds 0 1
  python sweeps/full_grid.py --preset quick --looks 2 4 8 --min-effect 1.0   # seeds only while a claim is open

Every trial's per-task metrics land in <results>/tasks and one row per trial in <results>/runs
(Parquet). Rerunning the same command (same --name) resumes: finished trials are not rerun,
unfinished ones continue from their last task checkpoint.

With --looks, the grid runs seeds 0, 1, ... look by look: after each look, each split's primary claims (ERK against
uniform and each growth pair, as main effects) are tested on final validation ACC (--val-fraction, default 0.1 with
--looks) at the look's share of alpha, and the next look's seeds run only while some claim is neither real nor
smaller than --min-effect points (analysis/looks.py).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python sweeps/full_grid.py` from a checkout

from analysis import looks, race_report, racing  # noqa: E402
from cldst import results  # noqa: E402
from cldst.config import RunConfig  # noqa: E402
from sweeps import common, experiment, settings  # noqa: E402
from sweeps.presets import AXES  # noqa: E402

MIN_EFFECT = 1.0  # --min-effect's default, in ACC points
LOOKS_VAL_FRACTION = 0.1  # --val-fraction's default with --looks: the looks stop the sweep, so they read validation


def build_parser() -> argparse.ArgumentParser:
    parser = common.parser("full_grid.py", __doc__)
    settings.add_options(parser)
    common.add_axis_options(parser, AXES)
    parser.add_argument("--seeds", nargs="+", type=int, help="one grid per seed, as --grid seed=... (default: 0)")
    parser.add_argument("--looks", nargs="+", type=int, metavar="SEEDS",
                        help="planned looks: seed counts, increasing, each at least 2 (e.g. 2 4 8); seeds 0, 1, ... "
                             "run look by look while a primary claim is open")
    parser.add_argument("--min-effect", type=float, metavar="POINTS",
                        help=f"with --looks: a claim whose interval lies inside +-POINTS is decided (default "
                             f"{MIN_EFFECT:g})")
    return parser


def grid(fixed: dict, axes: dict[str, list]) -> list[dict]:
    """Every point of the factorial grid, as RunConfig field dicts."""
    return [{**fixed, **dict(zip(axes, values, strict=True))} for values in itertools.product(*axes.values())]


def fixed_and_axes(args: argparse.Namespace, val_fraction: float = 0.0,
                   shorthands: dict[str, tuple[str, str]] | None = None) -> tuple[dict, dict[str, list]]:
    """The fixed fields and the axes (the seeds last), from the preset, --config and the command line."""
    given = settings.resolve(args, SHORTHANDS if shorthands is None else shorthands)
    fixed = common.fixed_config(given, args.preset, val_fraction)
    axes = {k: v for k, v in settings.over_preset(common.PRESETS[args.preset], given).grid.items()
            if k not in fixed and k != "seed"}
    return fixed, {**axes, "seed": given.grid.get("seed") or [fixed.pop("seed", 0)]}


SHORTHANDS = {**{name: (name, "grid") for name in AXES}, "seeds": ("seed", "grid"), "epochs": ("epochs", "set"),
              "val_fraction": ("val_fraction", "set")}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.check_options(args)
    if args.looks is not None:
        return sequential(args)
    if args.min_effect is not None:
        common.fail("--min-effect: only with --looks")
    fixed, axes = fixed_and_axes(args)
    points = grid(fixed, axes)
    resolved = settings.check_configs(points)
    first, seeds = resolved[0], len(axes["seed"])
    print(f"{args.preset}: {len(points) // seeds} trials per seed x {seeds} seed{'s' * (seeds > 1)} = "
          f"{len(points)} trials ({first.benchmark}, {first.net}, {first.epochs} epochs per task, "
          f"batch {first.batch_size})")
    for name, values in axes.items():
        print(f"  {name}: {' '.join(settings.text(v) for v in values)}")
    if args.dry_run:
        print("trials (crossed settings, then the others that differ from the benchmark's defaults):")
        for number, cfg in enumerate(resolved, 1):
            print(f"  {number}: {settings.describe(cfg, list(axes))}")
        return 0
    exp, bench = experiment.prepare(args, first)
    experiment.claim(exp, {"script": "full_grid", "fixed": fixed, "axes": axes})
    print(f"results -> {exp.results_dir}; Ray state -> {exp.tune_path}", flush=True)
    common.start_ray(args)
    from ray import tune

    param_space = {**fixed, **{name: tune.grid_search(values) for name, values in axes.items()}}
    tasks = sum(cfg.num_tasks for cfg in resolved)  # the splits may differ
    common.run(args, exp, bench, param_space, tasks=tasks)
    return common.summarize(exp, len(points))


def sequential(args: argparse.Namespace) -> int:
    """The grid look by look (--looks): every configuration runs seeds 0, 1, ... up to the next look while a
    primary claim is open; ends with the claims' verdicts and the runs saved."""
    problem = racing.check_looks(args.looks)
    if problem:
        common.fail(f"--looks: {problem}")
    if args.seeds is not None:
        common.fail("--seeds: not with --looks (the looks run seeds 0 to the last look's count - 1)")
    min_effect = MIN_EFFECT if args.min_effect is None else args.min_effect
    if not min_effect > 0:
        common.fail(f"--min-effect: must be above 0 points, got {args.min_effect:g}")
    fixed, axes = fixed_and_axes(args, LOOKS_VAL_FRACTION)
    if axes["seed"] != [0]:
        common.fail(f"seed: {' '.join(map(str, axes['seed']))} given, but the looks run seeds 0 to the last look's "
                    f"count - 1; leave the seed out")
    points = grid(fixed, {k: v for k, v in axes.items() if k != "seed"})
    configurations = settings.configurations(points)
    first = RunConfig.from_dict({**configurations[0], "seed": 0}).resolve()
    metric = "val_acc" if first.val_fraction > 0 else "acc"  # the stop is an early stop: on validation data
    seeds, fixed_runs = list(range(args.looks[-1])), len(points) * args.looks[-1]
    print(f"{args.preset}: {len(points)} configurations, looks at {' '.join(map(str, args.looks))} seeds; a claim "
          f"on final {looks.METRIC_NAMES[metric]} is decided when real or smaller than {min_effect:g} points; at most "
          f"{fixed_runs} runs (the fixed design)")
    if args.dry_run:
        return 0
    exp, bench = experiment.prepare(args, first)
    plan = race_report.Plan(exp.name, configurations, seeds, list(args.looks))
    experiment.claim(exp, {"script": "full_grid", "experiment": exp.name, "configurations": configurations,
                           "seeds": seeds, "looks": plan.looks, "min_effect": min_effect, "metric": metric})
    print(f"results -> {exp.results_dir}; Ray state -> {exp.tune_path}", flush=True)
    common.start_ray(args)
    from sweeps.race_state import GridLooksSearch

    common.run(args, exp, bench, {}, search_alg=GridLooksSearch(plan, exp.results_dir, min_effect, metric),
               num_samples=fixed_runs)
    try:
        rows = results.load(exp.results_dir, on_bad="skip").runs.to_pylist()
    except results.ResultsError:
        rows = []
    found = race_report.outcomes(rows, plan, value=metric)
    result = looks.sequential(looks.frame(plan, found.val, found.rows), ~np.isnan(found.val) | found.failed, seeds,
                              plan.looks, min_effect)
    print("")
    for line in looks.look_lines(result, fixed_runs, len(configurations)):
        print(line)
    for claim in result.claims:
        print(f"  {claim}: {result.verdicts.get(claim, 'open')}")
    print(f"runs {found.ended} of the fixed design's {fixed_runs}, {fixed_runs - found.ended} saved")
    code = common.summarize(exp, found.ended)
    return code if result.finished else 1


if __name__ == "__main__":
    sys.exit(main())
