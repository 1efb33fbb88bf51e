"""A race for the best configuration on Ray Tune: seeds go to the configurations still in contention, look by look.

  python sweeps/race.py --preset quick --looks 2 4 8                          # race the quick grid
  python sweeps/race.py --from results/<search> --top 4 --looks 3 6 10        # confirm a search's 4 best

Every configuration in the race runs the same seeds up to the next look (--looks: seed counts). After each look,
a configuration leaves when another still in the race beats it on final validation ACC, in a one-sided
seed-paired test at the look's level; the race ends when one configuration is left (the declared best) or after
the last look, with the set still in contention ranked by mean validation ACC (test ACC beside, never used).
A true best configuration leaves the race at most 5% of the time (analysis/racing.py says how, and
`python -m benchmarks.racing` measures it). --val-fraction (default 0.1) of each class's training images is
held out for validation.

--preset races the grid's configurations (the axis options narrow it, as in full_grid.py) on seeds 0, 1, ...;
--from races a finished search's --top best configurations by final validation ACC, on the first seeds the
search did not use. Runs land in Parquet as in every sweep; rerunning the same command resumes the race
(sweeps/race_state.py) without rerunning or duplicating a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python sweeps/race.py` from a checkout

from analysis import race_report, racing  # noqa: E402
from cldst import results  # noqa: E402
from cldst.config import RunConfig  # noqa: E402
from sweeps import common, experiment, full_grid, settings  # noqa: E402
from sweeps.presets import AXES  # noqa: E402

VAL_FRACTION = 0.1
TOP = 4  # --from: configurations raced by default
# a search's configurations are raced as the search ran them
FROM_REFUSES = ("epochs", "val_fraction", *AXES, "set_fields", "grid_fields", "config")
SHORTHANDS = {name: shorthand for name, shorthand in full_grid.SHORTHANDS.items() if name != "seeds"}


def build_parser() -> argparse.ArgumentParser:
    parser = common.parser("race.py", __doc__)
    settings.add_options(parser)
    common.add_axis_options(parser, AXES)
    parser.add_argument("--looks", nargs="+", type=int, required=True, metavar="SEEDS",
                        help="planned looks: seed counts, increasing, each at least 2 (e.g. 2 4 8)")
    parser.add_argument("--from", dest="source", metavar="EXPERIMENT",
                        help="race this finished search's best configurations (its results folder) on fresh seeds")
    parser.add_argument("--top", type=int, help="with --from: how many of its best to race (default 4)")
    return parser


def grid_configurations(args: argparse.Namespace) -> list[dict]:
    fixed, axes = full_grid.fixed_and_axes(args, VAL_FRACTION, SHORTHANDS)
    if "val_fraction" not in fixed:
        common.fail("--val-fraction: 0 leaves no validation data to race on; give a fraction in (0, 1)")
    if axes.pop("seed") != [0]:
        common.fail("seed: a race chooses its seeds; leave the seed out")
    return full_grid.grid(fixed, axes)


def search_configurations(args: argparse.Namespace) -> tuple[list[dict], set[int]]:
    """The search's `--top` best configurations by final validation ACC (each once: its best run) and the seeds
    its runs used."""
    for name in FROM_REFUSES:
        if getattr(args, name):
            common.fail(f"--{name.removesuffix('_fields').replace('_', '-')}: not with --from (the search's "
                        f"configurations race as they ran)")
    try:
        runs = results.load(Path(args.source).expanduser(), on_bad="skip").runs.to_pylist()
    except results.ResultsError as err:
        common.fail(f"--from: {err}")
    finished = [r for r in runs if r["status"] == "ok"]
    if finished and all(r["val_acc"] is None for r in finished):
        common.fail(f"--from: {args.source} ran without a validation split (no validation ACC to race on)")
    best: dict[str, dict] = {}
    for row in sorted((r for r in finished if r["val_acc"] is not None), key=lambda r: (-r["val_acc"], r["trial_id"])):
        best.setdefault(race_report.key(json.loads(row["config_json"])), row)
    top = TOP if args.top is None else args.top
    if not 2 <= top <= len(best):
        common.fail(f"--top: must be from 2 to {len(best)} (the configurations {args.source} finished), got {top}")
    chosen = [json.loads(row["config_json"]) for row in list(best.values())[:top]]
    return [{k: v for k, v in config.items() if k != "seed"} for config in chosen], {r["seed"] for r in runs}


def plan_for(args: argparse.Namespace) -> tuple[list[dict], list[int]]:
    """The configurations (resolved, without the seed) and the seeds, in the order the looks take them."""
    if args.source:
        configurations, used = search_configurations(args)
    else:
        configurations, used = grid_configurations(args), set()
    unique = list({race_report.key(c): c for c in settings.configurations(configurations)}.values())
    if len(unique) < 2:
        common.fail("--" + "/--".join(a.replace("_", "-") for a in AXES) + "/--grid: these give one configuration; a "
                    "race needs at least 2")
    seeds = [seed for seed in range(args.looks[-1] + len(used)) if seed not in used][:args.looks[-1]]
    return unique, seeds


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.check_options(args)
    problem = racing.check_looks(args.looks)
    if problem:
        common.fail(f"--looks: {problem}")
    if args.top is not None and not args.source:
        common.fail("--top: only with --from")
    configurations, seeds = plan_for(args)
    first = RunConfig.from_dict({**configurations[0], "seed": seeds[0]}).resolve()
    fixed_runs = len(configurations) * args.looks[-1]
    source = f"the {len(configurations)} best of {args.source}" if args.source else f"{args.preset}: the grid's " \
             f"{len(configurations)} configurations"
    print(f"race of {source}, on final validation ACC ({first.val_fraction:g} of the training images held out); "
          f"looks at {' '.join(map(str, args.looks))} seeds (seeds {' '.join(map(str, seeds))}); at most "
          f"{fixed_runs} runs (the fixed design: {len(configurations)} x {args.looks[-1]})")
    if args.dry_run:
        return 0
    if args.name is None:
        args.name = f"{Path(args.source).name if args.source else args.preset}-race"
    exp, bench = experiment.prepare(args, first)
    plan = race_report.Plan(exp.name, configurations, seeds, list(args.looks))
    experiment.claim(exp, {"script": "race", "experiment": exp.name, "configurations": configurations,
                           "seeds": seeds, "looks": plan.looks})
    print(f"results -> {exp.results_dir}; Ray state -> {exp.tune_path}", flush=True)
    common.start_ray(args)
    from sweeps.race_state import RaceSearch

    searcher = RaceSearch(plan, exp.results_dir)
    common.run(args, exp, bench, {}, search_alg=searcher, num_samples=fixed_runs)
    return end(exp, plan, fixed_runs)


def end(exp: experiment.Experiment, plan: race_report.Plan, fixed_runs: int) -> int:
    """The race as its Parquet holds it: the looks, the declared best or the set in contention, the runs saved;
    then the sweep's summary."""
    try:
        rows = results.load(exp.results_dir, on_bad="skip").runs.to_pylist()
    except results.ResultsError:
        rows = []
    result, found = race_report.replay(rows, plan)
    labels = race_report.names(plan.configurations)
    print("")
    for line in race_report.look_lines(result, labels):
        print(line)
    print(race_report.outcome_line(result, found, labels))
    table = race_report.final_rows(result, found, labels)
    if not table.empty:
        print(table.to_string(index=False))
    code = common.summarize(exp, found.ended)
    return code if result.finished else 1


if __name__ == "__main__":
    sys.exit(main())
