"""Adaptive search for the best DST configuration: Optuna proposes configurations, ASHA stops weak trials early.

  python sweeps/search.py --preset quick --num-samples 16
  python sweeps/search.py --num-samples 64 --density-range 0.02 0.3 --gpus-per-trial 0.5
  python sweeps/search.py --preset quick --grid lr=0.01,0.003 --grid prune=magnitude,SET --set optimizer=sgd

Optuna (TPE by default) searches sparse_init, growth and update_frequency (the preset's values,
or those given), every field given with --grid (a categorical choice of its values), density
(log-uniform in --density-range) and death_rate (uniform in --death-rate-range), each unless fixed
with --set or crossed with --grid, for the highest final validation ACC on one split: --val-fraction (default
0.1) of each class's training images is held out, and test data never chooses (--select-on-test
does, with --val-fraction 0, and says so). ASHA compares trials on validation ACC after each task
(time attribute: tasks learned) and stops the weak ones; they are recorded with status `stopped`
and told to Optuna as pruned. The study is <results>/optuna.db (SQLite; study name = the
experiment name): a restarted search continues its history. Rerunning the same command resumes,
exactly: ASHA's rungs and the study are rebuilt from the Parquet results (sweeps/search_state.py).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python sweeps/search.py` from a checkout

from sweeps import common, experiment, settings  # noqa: E402
from sweeps.search_state import ResumableASHA, SelectingSearch  # noqa: E402

CHOICES = ("sparse_init", "growth", "update_frequency")  # the preset's axes the search chooses from
RANGES = ("density", "death_rate")
SHORTHANDS = {**{name: (name, "grid") for name in CHOICES}, "num_tasks": ("num_tasks", "set"),
              "seed": ("seed", "set"), "epochs": ("epochs", "set"), "val_fraction": ("val_fraction", "set")}
# After the last task, val_avg_acc is the run's final validation ACC (avg_acc: its final test ACC).
METRIC, TEST_METRIC = "val_avg_acc", "avg_acc"
VAL_FRACTION = 0.1
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
ON_TEST = ("**Selecting on test ACC (--select-on-test): the chosen configuration's test ACC is optimistically "
           "biased; do not report it as a held-out result.**")


def build_parser() -> argparse.ArgumentParser:
    parser = common.parser("search.py", __doc__)
    settings.add_options(parser)
    common.add_axis_options(parser, CHOICES)
    parser.add_argument("--num-tasks", type=int, help="the split to search on (default: the benchmark's)")
    parser.add_argument("--density-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="density range, sampled log-uniformly (default: the preset's lowest and highest)")
    parser.add_argument("--death-rate-range", nargs=2, type=float, metavar=("LOW", "HIGH"), default=[0.1, 0.7],
                        help="death (prune) rate range, sampled uniformly (default 0.1 0.7)")
    parser.add_argument("--num-samples", type=int, default=24, help="trials to run (default 24)")
    parser.add_argument("--sampler", choices=list(SAMPLERS), default="tpe", help="Optuna sampler (default tpe)")
    parser.add_argument("--seed", type=int, help="seed of every run and of the sampler (default 0)")
    # 2: on the quick preset, validation ACC after task 1 barely ranks the final one (Spearman 0.19), after task 2
    # it does (0.86); docs/experiments/measurements.md, "ASHA's grace period".
    parser.add_argument("--grace-period", type=int, default=2,
                        help="tasks a trial learns before ASHA may stop it (default 2)")
    parser.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA keeps 1/this at each rung")
    parser.add_argument("--select-on-test", action="store_true",
                        help="select on test ACC (biased; needed with --val-fraction 0); default: validation ACC")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.check_options(args)
    given = settings.resolve(args, SHORTHANDS)
    preset = common.PRESETS[args.preset]
    choices = {name: values for name, values in preset.axes.items() if name in CHOICES and name not in given.fields()}
    choices.update(given.grid)
    for name, values in choices.items():
        schedule = next((v for v in values if isinstance(v, tuple)), None)
        if schedule is not None:
            common.fail(f"{name}: {settings.text(schedule).replace(',', ':')} is a per-task schedule; an Optuna "
                        f"choice takes one value per trial (--set fixes a schedule)")
    preset_density = preset.axes["density"]
    ranges = {"density": args.density_range or [min(preset_density), max(preset_density)],
              "death_rate": args.death_rate_range}
    for name, (low, high) in ranges.items():
        if low > high:
            common.fail(f"--{name.replace('_', '-')}-range: LOW {low:g} is above HIGH {high:g}")
    if args.density_range and "density" in given.fields():
        common.fail("--density-range: not with density fixed (--set) or crossed (--grid); give one of them")
    ranges = {name: bounds for name, bounds in ranges.items() if name not in given.fields()}
    fixed = common.fixed_config(given, args.preset, VAL_FRACTION)
    fixed.setdefault("seed", 0)
    if "val_fraction" not in fixed and not args.select_on_test:
        common.fail("--val-fraction: 0 leaves no validation data to select on; give a fraction in (0, 1), or add "
                    "--select-on-test to select on test ACC (biased)")
    metric = TEST_METRIC if args.select_on_test else METRIC
    corners = [{**fixed, **dict(zip([*choices, *ranges], values, strict=True))}
               for values in itertools.product(*choices.values(), *ranges.values())]
    first = settings.check_configs(corners)[0]
    if len(given.grid.get("num_tasks", [])) > 1:  # ASHA compares trials task by task, up to one last task
        common.fail(f"num_tasks: {' '.join(map(str, given.grid['num_tasks']))} given to --grid; the trials of a search "
                    f"share one split: fix it with --num-tasks N")
    if args.num_samples < 1:
        common.fail(f"--num-samples: must be >= 1, got {args.num_samples}")
    if not 1 <= args.grace_period <= first.num_tasks:
        common.fail(f"--grace-period: must be from 1 to {first.num_tasks} (tasks per trial), got {args.grace_period}")
    if not args.reduction_factor > 1:  # NaN too
        common.fail(f"--reduction-factor: must be > 1, got {args.reduction_factor:g}")
    scales = {"density": " (log)", "death_rate": ""}
    print(f"{args.preset}: {args.num_samples} trials, {args.sampler} over "
          + ", ".join([*(f"{k} {{{' '.join(map(str, v))}}}" for k, v in choices.items()),
                       *(f"{k} [{low:g}, {high:g}]{scales[k]}" for k, (low, high) in ranges.items())])
          + f"; {first.benchmark}, {first.net}, {first.num_tasks} tasks, {first.epochs} epochs per task; Optuna and "
            f"ASHA on {metric} per task"
          + (f" ({first.val_fraction:g} of the training images held out)" if metric == METRIC else ""))
    print("  fixed (differing from the benchmark's defaults): "
          + settings.describe(first, [], left_out=(*choices, *ranges)))
    if args.select_on_test:
        print(ON_TEST)
    if args.dry_run:
        return 0
    exp, bench = experiment.prepare(args, first)
    experiment.claim(exp, {"script": "search", "fixed": fixed, "choices": choices, "ranges": ranges,
                       "num_samples": args.num_samples, "sampler": args.sampler,
                       "asha": [args.grace_period, args.reduction_factor], "metric": metric})
    study_path = exp.results_dir / "optuna.db"
    print(f"results -> {exp.results_dir}; Optuna study {exp.name!r} -> {study_path}; Ray state -> {exp.tune_path}",
          flush=True)
    common.start_ray(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {name: optuna.distributions.CategoricalDistribution(values) for name, values in choices.items()}
    for name, (low, high) in ranges.items():
        space[name] = optuna.distributions.FloatDistribution(low, high, log=name == "density")
    searcher = SelectingSearch(space, metric=metric, mode="max", sampler=SAMPLERS[args.sampler](seed=fixed["seed"]),
                               study_name=exp.name, storage=optuna.storages.RDBStorage(f"sqlite:///{study_path}"),
                               results_dir=exp.results_dir, experiment=exp.name, fixed=fixed)
    scheduler = ResumableASHA(exp.results_dir, searcher, time_attr="tasks_done", metric=metric, mode="max",
                              max_t=first.num_tasks, grace_period=args.grace_period,
                              reduction_factor=args.reduction_factor)
    common.run(args, exp, bench, fixed, search_alg=searcher, scheduler=scheduler, num_samples=args.num_samples)
    code = common.summarize(exp, args.num_samples)
    if args.select_on_test:
        print(ON_TEST)
    return code


if __name__ == "__main__":
    sys.exit(main())
