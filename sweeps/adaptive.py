"""Adaptive DST: population-based training (PBT) that changes the DST settings at task boundaries.

  python sweeps/adaptive.py --preset quick                      # 8 members, digits, mlp, 5 tasks: minutes on a CPU
  python sweeps/adaptive.py --preset quick --population 24 --capacity-weight 0.1 --seed 1
  python sweeps/adaptive.py --preset quick --set lr=0.003 --set prune=Taylor_FO --growth random momentum

A population of runs learns the task sequence in lock step (synchronous PBT, time attribute: tasks
learned, one perturbation after every task but the last). After task t the members are ranked on
their validation ACC over tasks 0..t (--val-fraction, default 0.1, of each class's training images
held out; test data never ranks), optionally minus --capacity-weight x the share of the network the
tasks so far own, in %. Each member of the bottom --quantile copies a top member's checkpoint (weights
and every task's mask, exactly: Tune restores that checkpoint into it) and explores new settings for
the tasks to come: each of growth, density, death_rate and update_frequency (the values given, in
order) is resampled with --resample-probability, else shifted to a neighbouring value. sparse_init
is sampled per member at the start and travels with the checkpoint (one init per run). --set (or
the [set] of --config) fixes any RunConfig field for every member; a field fixed so is not explored.

Parquet: every tasks row records the settings its task trained with and `parent_trial_id`, the
member whose checkpoint that task started from; each member has one row per task, those whose model
an exploit threw away marked `discarded`, and `ranked_among`, how many members the ranking before the task
compared. A member's runs row describes the model it ended with (its lineage), so
`analysis.adaptive.lineage` rebuilds each final member's schedule from Parquet alone. Rerunning the same
command (same --name) resumes, as the other sweeps do; members the rerun finds at other task boundaries are
ranked at their own, so a ranking there compares fewer members, and `ranked_among` says so.

On a multi-node cluster an exploit restores a checkpoint another node saved: Tune hands it over
through --storage, which every node must reach (a shared mount, or s3://, gs://, ...). With a local
--storage that is not shared, a member scheduled on another node cannot read the checkpoint and fails.

PB2 is not offered: Ray's PB2 models only continuous hyperparameters (growth is a choice of four) and
needs GPy, which cldst does not depend on.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
from pathlib import Path

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python sweeps/adaptive.py` from a checkout

from sweeps import common, experiment, settings  # noqa: E402

# The settings PBT explores between tasks (config.PER_TASK_FIELDS but prune), and what each member starts with.
EXPLORED = ("growth", "density", "death_rate", "update_frequency")
VAL_FRACTION = 0.1
METRIC = "val_avg_acc"  # validation ACC over the tasks learned so far; the ranking: rank_score()
POPULATION = {"quick": 8}  # other presets: DEFAULT_POPULATION
DEFAULT_POPULATION = 16
DEATH_RATES = [0.3, 0.5, 0.7]
STARTING = ("sparse_init", "growth", "density", "update_frequency")  # sampled per member, from the preset's axes
SHORTHANDS = {"num_tasks": ("num_tasks", "set"), "seed": ("seed", "set"), "epochs": ("epochs", "set"),
              "val_fraction": ("val_fraction", "set")}
log = logging.getLogger("cldst.tune")  # the sweep's per-task log (sweep.log; stdout with --verbose)


def rank_score(result: dict, capacity_weight: float) -> float:
    """A member's score after a task: validation ACC over the tasks so far (%), minus `capacity_weight` x the
    share of the network its tasks own (%). Reads nothing else from the report, test ACC least of all."""
    val = result.get("val_avg_acc")
    if val is None:
        raise ValueError("val_avg_acc missing from the report: PBT ranks on validation ACC (--val-fraction > 0)")
    return float(val) - capacity_weight * 100.0 * float(result["capacity_used"])


class ValidationPBT(PopulationBasedTraining):
    """Synchronous PBT at task boundaries, ranked by rank_score(); no exploit after the last task (a member's
    final model is the one it trained, and its last tasks row says so)."""

    def __init__(self, capacity_weight: float, **options: object) -> None:
        # metric: what Tune checks every report holds; the score itself is rank_score(), in _save_trial_state
        super().__init__(time_attr="tasks_done", metric=METRIC, mode="max", perturbation_interval=1, synch=True,
                         **options)
        self.capacity_weight = capacity_weight
        # (member, task it learns next) -> how many members that ranking compared: the tasks rows' ranked_among
        self.ranked_among: dict[tuple[str, int], int] = {}

    def on_trial_add(self, tune_controller: object, trial: object) -> None:
        """A rerun (Tuner.restore) hands back the members with their progress but this scheduler fresh: each
        member stands after the last task of its checkpoint (the surviving one, if the killed driver had deleted
        the one Tune's state names), with the score of that checkpoint's report, and the next synchronisation point
        is the next task of the member furthest behind (else the members already past it would wait for it
        forever). A member Tune requeues after a failure rejoins the same way, at its own task boundary."""
        from cldst.tune import continue_from_surviving_checkpoint  # torch: only once the sweep runs

        continue_from_surviving_checkpoint(trial)
        super().on_trial_add(tune_controller, trial)
        saved = trial.latest_checkpoint_result
        state = self._trial_state[trial]
        state.last_train_time = state.last_perturbation_time = int(saved.metrics["tasks_done"]) if saved else 0
        if saved is not None and saved.metrics.get(METRIC) is not None:  # its score there: its checkpoint's report
            self._save_trial_state(state, state.last_train_time, saved.metrics, trial)
        behind = [s.last_train_time for t, s in self._trial_state.items() if not t.is_finished()]
        self._next_perturbation_sync = min(behind, default=0) + 1
        # Tune starts every PENDING trial it has room for, whether the scheduler chose it or not: a member restored
        # ahead of the barrier would learn on past it, unranked there, and one exploited while its actor was still
        # starting could be left paused for good (Tune's pause of a PENDING trial drops its starting actor but not
        # its staged place, so it is never started again). Paused now, it waits at its boundary like any member.
        for member, member_state in self._trial_state.items():
            saved = member.latest_checkpoint_result
            unfinished = saved is not None and int(saved.metrics["tasks_done"]) < int(saved.metrics["num_tasks"])
            if member.status == Trial.PENDING and unfinished and \
                    member_state.last_train_time >= self._next_perturbation_sync:
                if member is trial:
                    trial.set_status(Trial.PAUSED)  # Tune files a trial it adds under its status after this call
                else:
                    tune_controller._set_trial_status(member, Trial.PAUSED)

    def on_trial_result(self, tune_controller: object, trial: object, result: dict) -> str:
        if result["tasks_done"] >= result["num_tasks"]:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(WithoutFailed(tune_controller), trial, result)

    def choose_trial_to_run(self, tune_controller: object) -> object:
        """Ray's choice, unless a member failed for good while the others waited for it at a synchronisation
        point: they are paused with no result to come, so they are synchronised now, on the last result of one of
        them, as Ray's PBT would have done on the last of their results."""
        chosen = super().choose_trial_to_run(tune_controller)
        members = WithoutFailed(tune_controller).get_live_trials()
        waiting = [t for t in members if t.status == Trial.PAUSED and self._trial_state[t].last_result]
        if chosen is None and waiting and all(
                t.status != Trial.RUNNING and self._trial_state[t].last_train_time >= self._next_perturbation_sync
                for t in members):
            replayed = waiting[0]
            super().on_trial_result(WithoutFailed(tune_controller), replayed, self._trial_state[replayed].last_result)
            chosen = super().choose_trial_to_run(tune_controller)
        return chosen

    def _quantiles(self) -> tuple[list, list]:
        """Ray's bottom and top quantiles, of the members that stand at the boundary being synchronised. After a
        rerun, members ahead of it (their checkpoints hold more tasks) wait there, and Ray would rank them by their
        scores at later boundaries: they are left out of this ranking, and ranked at their own boundary. How many
        members each ranking compared goes to the tasks rows of the tasks they learn next (`ranked_among`)."""
        everyone = self._trial_state
        self._trial_state = {trial: state for trial, state in everyone.items()
                             if state.last_train_time == self._next_perturbation_sync}
        for trial in self._trial_state:
            self.ranked_among[(trial.trial_id, self._next_perturbation_sync)] = len(self._trial_state)
        try:
            return super()._quantiles()
        finally:
            self._trial_state = everyone

    def _checkpoint_or_exploit(self, trial: object, tune_controller: object, upper_quantile: list,
                               lower_quantile: list) -> None:
        """Ray's, but a top member still PENDING at a synchronisation donates the checkpoint it was restored from:
        that is its model. (A rerun pauses the members it restores at the barrier, in on_trial_add, so this is left
        to a member Tune requeued there after a lost actor.) Ray would ask its actor for a save, and the actor does
        not run yet: the save's future is None (ray/tune/execution/tune_controller.py, _schedule_trial_save; the
        actor manager returns no future for an actor still starting), the exploit of a bottom member is skipped
        with "Error resolving result", and such a rerun was seen to hang (tests/test_adaptive.py's rerun test)."""
        if trial in upper_quantile and trial.status == Trial.PENDING:
            self._trial_state[trial].last_checkpoint = trial.checkpoint
            return
        super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    def _exploit(self, tune_controller: object, trial: object, trial_to_clone: object) -> None:
        """Ray's exploit, only between members at the same task boundary, and saved whole.

        Same boundary: after a rerun the members stand at the tasks their checkpoints hold, which may differ, and
        Ray's barrier then ranks them as they come. A member that took a donor's model of more tasks would skip
        a task it never trained (no row for it, its lineage borrowing the donor's); one that took fewer would
        learn a task twice. Such a member keeps its own model and settings.

        Saved whole: Ray's exploit gives the member the donor's config and checkpoint, but swaps the checkpoint
        inside the trial's checkpoint manager, which leaves the JSON cached for the trial's run metadata as it was
        (ray/tune/schedulers/pbt.py, _exploit; ray/tune/trainable/metadata.py, get_json_state). Tune's next state
        save would then pair the new config with the member's old checkpoint, and a rerun after a driver kill
        would resume the member with a checkpoint its config refuses. Dropping the cache makes every save hold
        the member as it is: before the exploit, or after it."""
        done, donor_done = (self._trial_state[t].last_result.get("tasks_done") for t in (trial, trial_to_clone))
        if done != donor_done:
            log.info(f"[{trial.trial_id}] not exploited: it has learned {done} tasks, {trial_to_clone.trial_id} "
                     f"{donor_done}")
            return
        super()._exploit(tune_controller, trial, trial_to_clone)
        trial.run_metadata.invalidate_cache()

    def _save_trial_state(self, state: object, time: int, result: dict, trial: object) -> float:
        """Where Ray's PBT records the score it ranks members by (its last_score); ours is rank_score()."""
        state.last_score = rank_score(result, self.capacity_weight)
        state.last_train_time = time
        state.last_result = result
        return state.last_score


class WithoutFailed:
    """The tune controller as Ray's PBT sees it, less the members that failed for good. Tune keeps a failed trial
    among its live ones (ray/tune/execution/tune_controller.py: _process_trial_failure stops it, only stop_trial
    drops it from _live_trials), and synchronous PBT waits for every live trial to reach each synchronisation
    point (ray/tune/schedulers/pbt.py, on_trial_result): the others would wait for it forever
    (ray-project/ray#12122)."""

    def __init__(self, tune_controller: object) -> None:
        self._tune_controller = tune_controller

    def __getattr__(self, name: str) -> object:
        return getattr(self._tune_controller, name)

    def get_live_trials(self) -> list:
        return [trial for trial in self._tune_controller.get_live_trials() if trial.status != Trial.ERROR]


def build_parser() -> argparse.ArgumentParser:
    parser = common.parser("adaptive.py", __doc__)
    settings.add_options(parser, crossing=False)
    common.add_axis_options(parser, STARTING)
    parser.add_argument("--death-rate", dest="death_rate", nargs="+", type=float, metavar="DEATH_RATE",
                        help=f"death rates to explore (default: {' '.join(map(str, DEATH_RATES))})")
    parser.add_argument("--num-tasks", type=int, help="the split (default: the benchmark's)")
    parser.add_argument("--population", type=int,
                        help=f"members (default {POPULATION['quick']} for quick, else {DEFAULT_POPULATION})")
    parser.add_argument("--seed", type=int, help="seed of every member and of the exploration (default 0)")
    parser.add_argument("--quantile", type=float, default=0.25,
                        help="share of the population that exploits, and that is exploited (default 0.25, max 0.5)")
    parser.add_argument("--resample-probability", type=float, default=0.25,
                        help="chance that an explored setting is resampled rather than shifted (default 0.25)")
    parser.add_argument("--capacity-weight", type=float, default=0.0,
                        help="points of validation ACC a member loses per %% of the network its tasks own "
                             "(default 0: validation ACC alone)")
    return parser


def check(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.quantile) and 0 < args.quantile <= 0.5):  # Ray's PBT: at most half exploits
        common.fail(f"--quantile: must be a number in (0, 0.5], got {args.quantile:g}")
    if not (math.isfinite(args.resample_probability) and 0 <= args.resample_probability <= 1):
        common.fail(f"--resample-probability: must be a number in [0, 1], got {args.resample_probability:g}")
    if not (math.isfinite(args.capacity_weight) and args.capacity_weight >= 0):
        common.fail(f"--capacity-weight: must be a number >= 0, got {args.capacity_weight:g}")
    if args.population is not None and args.population < 2:
        common.fail(f"--population: must be >= 2 (PBT copies one member into another), got {args.population}")
    if args.seed is not None and args.seed < 0:
        common.fail(f"--seed: must be >= 0, got {args.seed}")
    if args.max_concurrent:  # Tune ignores it with PBT; and members held back would stall its synchronous barrier
        common.fail("--max-concurrent: not for a population, which trains together; size it with --population "
                    "(members wait for free CPUs or GPUs)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.check_options(args)
    check(args)
    given = settings.resolve(args, SHORTHANDS, crossing=False)
    fixed = common.fixed_config(given, args.preset, VAL_FRACTION)
    fixed.setdefault("seed", 0)
    if "val_fraction" not in fixed:
        common.fail("--val-fraction: 0 leaves no validation data to rank the population on; give a fraction in (0, 1)")
    preset = common.PRESETS[args.preset]
    choices = {**{name: list(dict.fromkeys(getattr(args, name) or preset.axes[name])) for name in STARTING},
               "death_rate": list(dict.fromkeys(args.death_rate or DEATH_RATES))}
    for name in set(choices) & set(given.fixed):
        if getattr(args, name) is not None:
            common.fail(f"{name}: fixed with --set and explored with --{name.replace('_', '-')}; give one of them")
        choices[name] = [fixed.pop(name)]  # one value for every member: nothing to explore (analysis.adaptive reads it)
    first = settings.check_configs([{**fixed, name: value} for name, values in choices.items() for value in values])[0]
    if first.num_tasks < 2:
        common.fail(f"--num-tasks: PBT acts between tasks, so it needs at least 2, got {first.num_tasks}")
    population = args.population or POPULATION.get(args.preset, DEFAULT_POPULATION)
    mutations = {name: choices[name] for name in EXPLORED if len(choices.get(name, [])) > 1}
    if not mutations:
        common.fail("--growth/--density/--death-rate/--update-frequency: give at least one of them two or more "
                    "values, else PBT has nothing to explore")
    weight = f", minus {args.capacity_weight:g} x capacity used (%)" if args.capacity_weight else ""
    print(f"{args.preset}: PBT, {population} members x {first.num_tasks} tasks ({first.benchmark}, {first.net}, "
          f"{first.epochs} epochs per task); ranked after each task on validation ACC so far{weight} "
          f"({first.val_fraction:g} of the training images held out); the bottom {args.quantile:g} copy the top")
    for name, values in choices.items():
        print(f"  {name}: {' '.join(str(v) for v in values)}" + ("  (explored)" if name in mutations else ""))
    print("  fixed (differing from the benchmark's defaults): " + settings.describe(first, [], left_out=tuple(choices)))
    if args.dry_run:
        return 0
    exp, bench = experiment.prepare(args, first)
    experiment.claim(exp, {"script": "adaptive", "fixed": fixed, "choices": choices, "population": population,
                       "quantile": args.quantile, "resample_probability": args.resample_probability,
                       "capacity_weight": args.capacity_weight})
    print(f"results -> {exp.results_dir}; Ray state -> {exp.tune_path}", flush=True)
    common.start_ray(args)
    warn_unshared_storage(exp)
    from ray import tune

    random.seed(fixed["seed"])  # PBT's explore draws from Python's random
    scheduler = ValidationPBT(args.capacity_weight, hyperparam_mutations=mutations, quantile_fraction=args.quantile,
                              resample_probability=args.resample_probability)
    param_space = {**fixed, **{name: tune.choice(values) for name, values in choices.items()}}
    common.run(args, exp, bench, param_space, tasks=population * first.num_tasks, scheduler=scheduler,
               num_samples=population, search_alg=BasicVariantGenerator(random_state=fixed["seed"]))
    return common.summarize(exp, population)


def warn_unshared_storage(exp: experiment.Experiment) -> None:
    """A local --storage on a cluster of several nodes works only if every node mounts it at that path."""
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) > 1 and not experiment.is_remote(exp.storage):
        print(f"note: {len(nodes)} nodes and a local --storage {exp.storage}: a member exploited on another node "
              f"reads the checkpoint from there, so every node must mount it at that path (else pass a shared "
              f"--storage, e.g. s3://...)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
