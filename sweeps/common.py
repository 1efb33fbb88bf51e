"""What the sweep scripts share: command-line options, Ray start-up, the Tuner run, the summary.

Where an experiment's results and Ray Tune state go, and what is checked before Ray starts: sweeps/experiment.py.
A cluster that authenticates with a token (RAY_AUTH_MODE=token) needs the same token in the driver's environment
(RAY_AUTH_TOKEN, or ~/.ray/auth_token).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import re
from pathlib import Path

from analysis import race_report
from cldst.cli import OneLineParser, fail
from cldst.compaction import compact
from cldst.config import text
from cldst.data import Benchmark
from cldst.results import KINDS, RUN_STATUSES, ResultsError, load
from sweeps import cluster
from sweeps.experiment import Experiment, is_remote
from sweeps.presets import AXIS_TYPES, DEFAULT_PRESET, PAPER_AXES, PRESETS
from sweeps.settings import Settings

# Retries of a trial lost to the infrastructure (cldst.failures): enough for a spot node lost every task of a long
# trial, and still a bound, for a cluster that loses every node it starts.
DEFAULT_MAX_INFRA_RETRIES = 20
# Without a validation split the summary can only rank on test data: it says so, so that no one chooses by it.
ON_TEST = " (no validation split: a ranking on test data, not a choice; --val-fraction holds one out)"
SUMMARY_COLUMNS = ("sparse_init", "growth", "density", "update_frequency", "death_rate", "num_tasks", "seed")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options both scripts take: preset, epochs, data, cluster, resources, results."""
    p = OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS),
                   help=f"the starting point every setting overrides (default: the file's, else {DEFAULT_PRESET})")
    p.add_argument("--epochs", type=int, help="epochs per task, as --set epochs=N (default: the preset's)")
    p.add_argument("--data-root", default="./data", help="dataset folder, read once by the driver (default ./data)")
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--storage", help="Ray Tune state and checkpoints (default: <results parent>/ray); shared "
                                     "by all nodes on a cluster (a shared path or s3://...)")
    p.add_argument("--results", help="experiment folder for the Parquet results (default: results/<name>)")
    p.add_argument("--name", help="experiment name (default: the preset's); the same name resumes")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions pack trials on a GPU (default 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="also the trial's torch threads (default 1)")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default 0: as resources allow)")
    p.add_argument("--max-failures", type=int, default=1,
                   help="retries of a trial that failed on its own side, from its last task checkpoint (default 1)")
    p.add_argument("--max-infra-retries", type=int, default=DEFAULT_MAX_INFRA_RETRIES,
                   help="retries of a trial whose node, actor, worker or storage was lost, from its last task "
                        f"checkpoint; not counted in --max-failures (default {DEFAULT_MAX_INFRA_RETRIES})")
    p.add_argument("--retry-errored", action="store_true",
                   help="on a rerun, also resume the trials that failed on their own side (those lost to the "
                        "infrastructure always resume)")
    p.add_argument("--dry-run", action="store_true", help="print the trials and exit; starts nothing")
    p.add_argument("--verbose", action="store_true",
                   help="also print the per-task lines (always in <results>/sweep.log)")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="share of each class's training images held out for validation (default: the script's)")
    p.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="when stdout is not a terminal, one progress line every SECONDS (default 30)")
    p.add_argument("--mlflow", metavar="URI", help="also log to MLflow at this tracking URI (file:..., http://...); "
                                                   "needs pip install 'cldst[mlflow]'")
    p.add_argument("--wandb", metavar="PROJECT", help="also log to this Weights & Biases project "
                                                      "(WANDB_MODE=offline works); needs pip install 'cldst[wandb]'")
    return p


def add_axis_options(p: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """One option per axis, taking one or more values that replace the preset's: a shorthand of --grid."""
    for name in names:
        p.add_argument("--" + name.replace("_", "-"), dest=name, nargs="+", type=AXIS_TYPES.get(name, str),
                       metavar=name.upper(), help=f"these values instead of the preset's (paper: "
                                                  f"{' '.join(map(str, PAPER_AXES[name]))})")


def check_options(args: argparse.Namespace) -> None:
    # Ray counts resources in steps of 0.0001: a smaller fraction would be 0
    if not (math.isfinite(args.gpus_per_trial) and (args.gpus_per_trial == 0 or args.gpus_per_trial >= 1e-4)):
        fail(f"--gpus-per-trial: must be 0 or a number >= 0.0001, got {args.gpus_per_trial:g}")
    if not (math.isfinite(args.cpus_per_trial) and args.cpus_per_trial >= 1e-4):
        fail(f"--cpus-per-trial: must be a number >= 0.0001, got {args.cpus_per_trial:g}")
    for option, value in (("--max-concurrent", args.max_concurrent), ("--max-failures", args.max_failures),
                          ("--max-infra-retries", args.max_infra_retries)):
        if value < 0:
            fail(f"{option}: must be >= 0, got {value}")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        fail(f"--name: {args.name!r} may hold only letters, digits, '_', '.' and '-'")
    if args.val_fraction is not None and not (math.isfinite(args.val_fraction) and 0 <= args.val_fraction < 1):
        fail(f"--val-fraction: must be a number in [0, 1) (0: no validation split), got {args.val_fraction:g}")
    if not (math.isfinite(args.progress_every) and args.progress_every > 0):
        fail(f"--progress-every: must be a number of seconds > 0, got {args.progress_every:g}")
    for option, package in (("--mlflow", "mlflow"), ("--wandb", "wandb")):
        value = getattr(args, package)
        if value is not None and not value.strip():
            fail(f"{option}: must not be empty")
        if value is not None and importlib.util.find_spec(package) is None:
            fail(f"{option}: the {package} package is not installed; pip install 'cldst[{package}]' (or {package})")


def fixed_config(given: Settings, preset: str, val_fraction: float = 0.0) -> dict:
    """The preset's fixed fields under the user's; `val_fraction`: the script's default, absent when 0 (sweeps
    without a split keep their sweep.json)."""
    fixed = {**PRESETS[preset].fixed, **given.fixed}
    if "val_fraction" not in given.grid and not fixed.setdefault("val_fraction", val_fraction):
        del fixed["val_fraction"]
    return fixed


def start_ray(args: argparse.Namespace) -> None:
    """Join the cluster at --address / $RAY_ADDRESS (shipping cldst with the job), else start a local Ray."""
    import ray

    import cldst

    if ray.is_initialized():  # the caller (a notebook, the tests) has joined a Ray already
        return
    quiet = {"logging_level": logging.WARNING, "logging_config": ray.LoggingConfig(log_level="WARNING")}
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        runtime_env = {"py_modules": [str(Path(cldst.__file__).parent)], **cluster.worker_setup()}
        ray.init(address=address, runtime_env=runtime_env, **quiet)
    else:
        from sweeps.ray_logs import LOCAL_TOKEN_NOTICE, dropped

        with dropped(*LOCAL_TOKEN_NOTICE):
            ray.init(address="local", include_dashboard=False, runtime_env=cluster.worker_setup(), **quiet)
        cluster.protect_token_file()


# Task checkpoints Tune keeps per trial. A grid or search trial only ever resumes from its last one. Population-based
# training clones a top trial's checkpoint some reports after it was saved, and Tune warns that below 3 it may be
# deleted first (ray/tune/schedulers/pbt.py), so PBT keeps 3.
# Tune forces an experiment-state snapshot whenever a trial has saved num_to_keep checkpoints since the last one, and
# a forced snapshot waits for the previous upload. On a local --storage that is ~20 ms; on remote storage (s3://,
# gs://, ...) it is the upload of the whole experiment folder: at 144 trials on a local S3 server, keeping 1 let the
# driver handle 3 of 73 task reports due in 30 s, keeping 2 all of them in 0.75% of its time, since a trial rarely
# saves twice between two uploads (benchmarks.checkpoint_cost --storage, RESULTS.md). So remote storage keeps 2.
CHECKPOINTS_KEPT, REMOTE_CHECKPOINTS_KEPT, PBT_CHECKPOINTS_KEPT = 1, 2, 3


def checkpoints_kept(scheduler: object, storage: str = "") -> int | None:
    from ray.tune.schedulers import PopulationBasedTraining  # PB2 is one too

    if isinstance(scheduler, PopulationBasedTraining):
        return PBT_CHECKPOINTS_KEPT
    return REMOTE_CHECKPOINTS_KEPT if is_remote(storage) else CHECKPOINTS_KEPT


def run(args: argparse.Namespace, exp: Experiment, bench: Benchmark, param_space: dict, tasks: int | None = None,
        **tune_options: object) -> None:
    """Start the sweep, or resume it where `exp.tune_path` holds its state: finished trials are kept,
    unfinished ones continue from their last task checkpoint, and so do errored ones that the infrastructure failed
    (all errored ones with --retry-errored); the others stay failed (cldst.failures).

    `tasks`: how many tasks the whole sweep learns, for the progress view (default: estimated as trials start).
    `tune_options` go to `tune.TuneConfig` (search_alg, scheduler, num_samples) when the sweep starts.
    """
    from ray import tune

    from cldst import failures
    from cldst.tune import ParquetCallback, trainable
    from sweeps.progress import SweepProgress, task_log
    from sweeps.ray_logs import tune_logs

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own banner and tables (verbose=0): our view replaces them
    resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
    fn = tune.with_resources(tune.with_parameters(trainable, bench=bench), resources)
    progress = SweepProgress(exp.name, every=args.progress_every, tasks=tasks)
    parquet = ParquetCallback(exp.results_dir, exp.name)
    callbacks = [parquet, progress, *logger_callbacks(args, exp)]
    scheduler = tune_options.get("scheduler")
    if tune.Tuner.can_restore(exp.tune_path):
        print(f"resuming {exp.name} from {exp.tune_path}", flush=True)
        tuner = tune.Tuner.restore(exp.tune_path, fn, resume_unfinished=True, param_space=param_space)
        # Tune restores the callbacks pickled by the first run; this run's options (--verbose, --mlflow, ...) win.
        tuner._local_tuner.get_run_config().callbacks = callbacks
        scheduler = tuner._local_tuner._tune_config.scheduler  # the one Tune runs: the first run's, unpickled
    else:
        run_config = tune.RunConfig(
            name=exp.name, storage_path=exp.storage, verbose=0, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=checkpoints_kept(tune_options.get("scheduler"), exp.storage)))
        # Reusing a CPU trial's actor for the next one saves a process start and the torch import per trial. A GPU
        # trial gets a fresh process instead: a reused one would carry the CUDA caching allocator's blocks, the
        # CUDA context, cuDNN's workspaces and the memory cap of the trial before it (empty_cache frees only the
        # first), and a trial of minutes to hours does not miss the seconds a process start costs.
        tune_config = tune.TuneConfig(max_concurrent_trials=args.max_concurrent or None,
                                      reuse_actors=args.gpus_per_trial == 0,
                                      **tune_options)
        tuner = tune.Tuner(fn, param_space=param_space, tune_config=tune_config, run_config=run_config)
    parquet.ranked_among = getattr(scheduler, "ranked_among", {})  # PBT's rankings, for the tasks rows
    with task_log(exp.results_dir, args.verbose), tune_logs(exp.tune_path), \
            failures.retrying_infrastructure(args.max_infra_retries), failures.resuming_errored(args.retry_errored):
        try:
            tuner.fit()
        except Exception as err:  # a results write failed (ParquetCallback): one line, not Tune's traceback
            cause = _results_error(err)
            if cause is None:
                raise
            fail(str(cause), code=1)
        finally:
            progress.close()


def logger_callbacks(args: argparse.Namespace, exp: Experiment) -> list:
    """Ray Tune's MLflow and W&B loggers, as asked (check_options made sure their packages are there). Tune's
    own CSV, JSON and TensorBoard loggers always run: <storage>/<name>/<trial>/ holds their files."""
    callbacks = []
    if args.mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=args.mlflow, experiment_name=exp.name))
    if args.wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=args.wandb, group=exp.name))
    return callbacks


def _results_error(err: BaseException | None) -> ResultsError | None:
    """The ResultsError behind `err` (Tune re-raises a callback's exception as a TuneError around it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ResultsError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def compact_finished(exp: Experiment) -> None:
    """Merge the finished trials' part files (cldst.compaction): a folder of thousands of trials then reads in
    seconds. Tune has returned, so nothing writes here; a rerun that resumes a trial writes new parts, which
    the reader puts before the compacted rows. A failure costs only speed: it is said, and the sweep goes on."""
    if not all((exp.results_dir / kind).is_dir() for kind in KINDS):
        return
    try:
        done = compact(exp.results_dir)
    except (OSError, ResultsError) as err:
        print(f"warning: the results were not compacted ({err}); they read as they are, only slower")
        return
    if done.generation is not None:
        print(f"compacted: {done.finished_trials} finished trial(s) into compact-{done.generation:06d}.parquet "
              f"under tasks/ and runs/")


def settings_text(row: dict, columns: tuple[str, ...] = SUMMARY_COLUMNS) -> str:
    """`columns` of a runs row; one that is not a column of it (a crossed lr, prune, ...) from its config_json.
    None: a per-task setting that varied over the run's tasks (an adaptive sweep's member)."""
    saved = json.loads(row["config_json"]) if row.get("config_json") else {}
    values = {c: row[c] if c in row else saved.get(c) for c in columns}
    return " ".join(f"{c}=varies" if v is None else f"{c}={v:.4g}" if isinstance(v, float) else f"{c}={text(v)}"
                    for c, v in values.items())


def crossed_columns(runs: list[dict]) -> tuple[str, ...]:
    """SUMMARY_COLUMNS and every other setting that differs among the runs, so that no two lines look alike."""
    configs = [json.loads(r["config_json"]) for r in runs if r["config_json"]]
    names = sorted({name for config in configs for name in config} - {*SUMMARY_COLUMNS, "device"})
    return SUMMARY_COLUMNS + tuple(n for n in names if len({json.dumps(c.get(n)) for c in configs}) > 1)


def configurations(runs: list[dict]) -> list[list[dict]]:
    """The runs grouped by configuration: every RunConfig field but the seed (config_json without it)."""
    groups: dict[str, list[dict]] = {}
    for row in runs:
        saved = json.loads(row["config_json"]) if row["config_json"] else {c: row[c] for c in SUMMARY_COLUMNS}
        groups.setdefault(race_report.key(saved), []).append(row)
    return list(groups.values())


def print_top_runs(ok: list[dict], on_val: bool) -> None:
    """The 5 best single runs; ties: the later trial id first, as the progress view's "best"
    (sweeps.progress.best_acc) names it."""
    top = sorted(ok, key=lambda r: (r["val_acc" if on_val else "acc"], r["trial_id"]), reverse=True)[:5]
    if top:
        print("top configurations by final validation ACC (test ACC beside it):" if on_val
              else f"top configurations by final test ACC{ON_TEST}:")
    columns = crossed_columns(ok)
    for r in top:
        val = f"val ACC {r['val_acc']:6.2f}  " if on_val else ""
        print(f"  {val}ACC {r['acc']:6.2f}  BWT {r['bwt']:+6.2f}  {settings_text(r, columns)}  ({r['trial_id']})")


def print_top_configurations(groups: list[list[dict]], on_val: bool) -> None:
    """The 5 best configurations by their mean over seeds (n: the runs averaged), once one has run several seeds: a
    single run's luck does not rank them."""
    def mean(group: list[dict], column: str) -> float:
        return sum(r[column] for r in group) / len(group)

    metric = "val_acc" if on_val else "acc"
    columns = tuple(c for c in crossed_columns([run for group in groups for run in group]) if c != "seed")
    ranked = sorted(groups, key=lambda g: (mean(g, metric), len(g)), reverse=True)[:5]
    print("top configurations by mean final validation ACC over seeds (test ACC beside it):" if on_val
          else f"top configurations by mean final test ACC over seeds{ON_TEST}:")
    for group in ranked:
        val = f"val ACC {mean(group, 'val_acc'):6.2f}  " if on_val else ""
        print(f"  {val}ACC {mean(group, 'acc'):6.2f}  BWT {mean(group, 'bwt'):+6.2f}  n={len(group):<3d} "
              f"{settings_text(group[0], columns)}")


def summarize(exp: Experiment, expected: int) -> int:
    """Print where the Parquet is, the ok/error/stopped counts, the files that are not results (a stray or
    truncated file is listed, never merged) and the top 5 by final ACC (validation ACC where there is a split): single
    runs, or configurations by their mean over seeds once one has run several; 1 if trials are left."""
    compact_finished(exp)
    try:
        loaded = load(exp.results_dir, on_bad="skip")
        runs, skipped = loaded.runs.to_pylist(), loaded.skipped
    except ResultsError:  # no tasks/ or runs/ folder yet: no trial got as far as its first task
        runs, skipped = [], []
    counts = ", ".join(f"{sum(r['status'] == s for r in runs)} {s}" for s in RUN_STATUSES)
    print(f"\nParquet results: {exp.results_dir}/tasks and {exp.results_dir}/runs "
          f"(read them with cldst.results.load({str(exp.results_dir)!r}))")
    print(f"trials: {counts}, {len(runs)} of {expected} ended")
    if skipped:
        print(f"warning: {len(skipped)} file(s) in {exp.results_dir} are not readable cldst results; left out:")
        for _path, reason in skipped:
            print(f"  {reason}")
    for run_row in [r for r in runs if r["status"] == "error"][:5]:
        failure = f" ({run_row['failure']})" if run_row["failure"] else ""  # infrastructure, own; null before v4
        print(f"  error in {run_row['trial_id']}{failure}: {run_row['error']}")
    ok = [r for r in runs if r["status"] == "ok"]
    on_val = bool(ok) and all(r["val_acc"] is not None for r in ok)  # never rank on test data when there is a split
    by_configuration = configurations(ok)
    if any(len({r["seed"] for r in group}) > 1 for group in by_configuration):
        print_top_configurations(by_configuration, on_val)
    else:
        print_top_runs(ok, on_val)
    if len(runs) < expected:
        print(f"{expected - len(runs)} trials unfinished: rerun the same command to resume")
        return 1
    return 0
