"""Adaptive search for the best DST configuration: Optuna proposes configurations, ASHA stops weak trials early.

  python sweeps/search.py --preset quick --num-samples 16
  python sweeps/search.py --num-samples 64 --density-range 0.02 0.3 --gpus-per-trial 0.5

Optuna (TPE by default) searches sparse_init, growth and update_frequency (the preset's values,
or those given), density (log-uniform in --density-range) and death_rate (uniform in
--death-rate-range) for the highest final validation ACC on one split: --val-fraction (default
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

from sweeps import common, experiment  # noqa: E402
from sweeps.search_state import ResumableASHA, SelectingSearch  # noqa: E402

CHOICES = ("sparse_init", "growth", "update_frequency")
# After the last task, val_avg_acc is the run's final validation ACC (avg_acc: its final test ACC).
METRIC, TEST_METRIC = "val_avg_acc", "avg_acc"
VAL_FRACTION = 0.1
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
ON_TEST = ("**Selecting on test ACC (--select-on-test): the chosen configuration's test ACC is optimistically "
           "biased; do not report it as a held-out result.**")


def build_parser() -> argparse.ArgumentParser:
    parser = common.parser("search.py", __doc__)
    common.add_axis_options(parser, CHOICES)
    parser.add_argument("--num-tasks", type=int, help="the split to search on (default: the benchmark's)")
    parser.add_argument("--density-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="density range, sampled log-uniformly (default: the preset's lowest and highest)")
    parser.add_argument("--death-rate-range", nargs=2, type=float, metavar=("LOW", "HIGH"), default=[0.1, 0.7],
                        help="death (prune) rate range, sampled uniformly (default 0.1 0.7)")
    parser.add_argument("--num-samples", type=int, default=24, help="trials to run (default 24)")
    parser.add_argument("--sampler", choices=list(SAMPLERS), default="tpe", help="Optuna sampler (default tpe)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run and of the sampler (default 0)")
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
    choices = common.axes(args, CHOICES)
    preset_density = common.PRESETS[args.preset].axes["density"]
    ranges = {"density": args.density_range or [min(preset_density), max(preset_density)],
              "death_rate": args.death_rate_range}
    for name, (low, high) in ranges.items():
        if low > high:
            common.fail(f"--{name.replace('_', '-')}-range: LOW {low:g} is above HIGH {high:g}")
    fixed = {**common.fixed_config(args, VAL_FRACTION), "seed": args.seed}
    if "val_fraction" not in fixed and not args.select_on_test:
        common.fail("--val-fraction: 0 leaves no validation data to select on; give a fraction in (0, 1), or add "
                    "--select-on-test to select on test ACC (biased)")
    metric = TEST_METRIC if args.select_on_test else METRIC
    if args.num_tasks is not None:
        fixed["num_tasks"] = args.num_tasks
    corners = [{**fixed, **dict(zip([*choices, *ranges], values, strict=True))}
               for values in itertools.product(*choices.values(), *ranges.values())]
    first = common.check_configs(corners)
    if args.num_samples < 1:
        common.fail(f"--num-samples: must be >= 1, got {args.num_samples}")
    if not 1 <= args.grace_period <= first.num_tasks:
        common.fail(f"--grace-period: must be from 1 to {first.num_tasks} (tasks per trial), got {args.grace_period}")
    if not args.reduction_factor > 1:  # NaN too
        common.fail(f"--reduction-factor: must be > 1, got {args.reduction_factor:g}")
    print(f"{args.preset}: {args.num_samples} trials, {args.sampler} over "
          + ", ".join(f"{k} {{{' '.join(map(str, v))}}}" for k, v in choices.items())
          + f", density [{ranges['density'][0]:g}, {ranges['density'][1]:g}] (log), death_rate "
            f"[{ranges['death_rate'][0]:g}, {ranges['death_rate'][1]:g}]; {first.benchmark}, {first.net}, "
            f"{first.num_tasks} tasks, {first.epochs} epochs per task; Optuna and ASHA on {metric} per task"
            + (f" ({first.val_fraction:g} of the training images held out)" if metric == METRIC else ""))
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
    space["density"] = optuna.distributions.FloatDistribution(*ranges["density"], log=True)
    space["death_rate"] = optuna.distributions.FloatDistribution(*ranges["death_rate"])
    searcher = SelectingSearch(space, metric=metric, mode="max", sampler=SAMPLERS[args.sampler](seed=args.seed),
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
