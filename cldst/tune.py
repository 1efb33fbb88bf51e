"""Ray Tune glue: the function trainable over `continual.run`, and the driver-side callback that writes Parquet.

The trainable reports once per task learned (so `training_iteration` == tasks learned), each
report carrying a checkpoint of the run at that task boundary; a restarted or retried trial
resumes from `tune.get_checkpoint()` at the next task. The callback runs in the driver: it
upserts one `tasks/` row per task checkpoint and writes the trial's `runs/` row when the trial ends
(ok, error, or stopped by a scheduler), through `cldst.results`. Everything it needs after a
driver restart is in the trial's tasks part file, so a resumed sweep never duplicates rows.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from cldst import checkpoint, continual, lineage, results
from cldst.config import PER_TASK_FIELDS, RunConfig
from cldst.data import Benchmark

CHECKPOINT_FILE = "state.pt"
log = logging.getLogger(__name__)  # one line per task and per ended trial; the sweep sends it on


def trainable(config: dict, bench: Benchmark) -> None:
    """One trial: learn the tasks of `config` (RunConfig fields), reporting after each task.

    Metrics per report: the TaskResult fields (task, acc, avg_acc, bwt, capacity_used, ...),
    plus acc_current (accuracy on the task just learned), tasks_done, num_tasks, node (the
    hostname and Ray node id of the worker), device and gpu_memory_fraction (the cap on a shared
    GPU, else None). Exceptions (a TrainingError on a NaN loss, ...) propagate, so Tune records
    the trial as failed with their message.

    A trial holding a fraction f < 1 of a GPU may allocate at most f of its memory: the share Ray
    counts is logical only, and without the cap one trial's growth would starve its neighbours.
    """
    cfg = RunConfig.from_dict(config).resolve()
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    if cfg.device == "auto":  # Ray makes only the trial's GPUs visible; a trial without one trains on the CPU
        cfg = dataclasses.replace(cfg, device="cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
    share = resources.get("GPU", 0) if cfg.device == "cuda" else 0
    cap = share if 0 < share < 1 else None
    if cap is not None:
        torch.cuda.set_per_process_memory_fraction(cap, torch.cuda.current_device())
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()}"
    state = None
    saved = tune.get_checkpoint()
    if saved is not None:
        with saved.as_directory() as folder:
            path = Path(folder) / CHECKPOINT_FILE
            if not path.exists():  # a local --storage that this node does not share (PBT: another member's)
                raise checkpoint.CheckpointError(
                    f"{path}: the checkpoint to continue from is not on this node ({node}); on a cluster of several "
                    f"nodes, --storage must be a folder every node mounts at that path, or s3://, gs://, ...")
            state = checkpoint.load(path, cfg.to_dict())
    trial_id = tune.get_context().get_trial_id()
    # A checkpoint another trial made (population-based training's exploit): the next task's row names it.
    parent = state.get("trial_id") if state is not None and state.get("trial_id") != trial_id else None
    first_task = len(state["results"]) if state is not None else 0

    def on_task_end(result: continual.TaskResult, task_state: dict) -> None:
        metrics = dataclasses.asdict(result)
        metrics.update(acc_current=result.acc[-1], tasks_done=result.task + 1, num_tasks=cfg.num_tasks, node=node,
                       device=cfg.device, gpu_memory_fraction=cap,
                       parent_trial_id=parent if result.task == first_task else None)
        task_state["trial_id"] = trial_id  # the trial that made this checkpoint, for its exploiters' lineage
        with tempfile.TemporaryDirectory() as folder:
            checkpoint.save(task_state, Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        continual.run(cfg, bench, continual.Hooks(on_task_end=on_task_end), state)
    except torch.cuda.OutOfMemoryError as err:
        if cap is None:
            raise
        gib = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
        raise continual.TrainingError(
            f"out of CUDA memory within this trial's share of the GPU (--gpus-per-trial {cap:g}: {cap * gib:.1f} of "
            f"{gib:.1f} GiB); pass a larger --gpus-per-trial (fewer trials per GPU) "
            f"({str(err).splitlines()[0][:160]})") from err


class ParquetCallback(tune.Callback):
    """Writes `tasks/part-<trial_id>.parquet` as tasks finish and `runs/part-<trial_id>.parquet`
    when a trial ends, under `experiment_dir`; logs a short line for each (logger `cldst.tune`).

    A write that fails (disk full, the folder gone, a part file spoiled by someone else) stops the sweep at
    the end of Tune's step with a ResultsError: the task whose row failed is not recorded as checkpointed
    (Tune drops a checkpoint whose callback raised), so a rerun relearns it rather than leave a gap.
    """

    def __init__(self, experiment_dir: str | Path, experiment: str) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.experiment = experiment
        self.write_error: results.ResultsError | None = None

    def on_checkpoint(self, iteration: int, trials: list, trial: tune.experiment.Trial, checkpoint: tune.Checkpoint,
                      **info) -> None:
        """A task's row is written once Tune holds the task's checkpoint (rather than on its result): a
        sweep interrupted at any point resumes each trial right after the last task in its Parquet, or, if
        the driver died between this write and Tune saving its state, relearns that task and replaces its row."""
        result = trial.last_result  # the report that carried this checkpoint
        row = results.task_row(self._common(trial, result["node"]), result, result.get("parent_trial_id"))
        self._io(results.upsert_task_rows, self.experiment_dir, trial.trial_id, [row])
        log.info(f"[{trial.trial_id}] task {result['tasks_done']}/{result['num_tasks']}: avg acc "
                 f"{result['avg_acc']:.2f}, acc on this task {result['acc_current']:.2f}, capacity used "
                 f"{result['capacity_used']:.3f}, {result['images_per_second']:.0f} img/s")

    def on_trial_complete(self, iteration: int, trials: list, trial: tune.experiment.Trial, **info) -> None:
        self._end(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: tune.experiment.Trial, **info) -> None:
        self._end(trial, error_message(trial))

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.write_error is not None:  # raised out of Tuner.fit, after Tune saved its state for this step
            raise self.write_error

    def _io(self, operation, *args):
        try:
            return operation(*args)
        except (OSError, results.ResultsError, lineage.LineageError) as err:  # lineage: a parent's rows gone
            reason = f"{err.strerror or err}" if isinstance(err, OSError) else str(err)
            self.write_error = results.ResultsError(
                f"cannot write results under {self.experiment_dir} ({reason}); the sweep stopped with every "
                f"file written so far intact: fix that, then rerun the same command to resume")
            raise self.write_error from err

    def _common(self, trial: tune.experiment.Trial, node: str) -> dict:
        config = RunConfig.from_dict(trial.config).resolve().to_dict()
        return results.common_columns(config, self.experiment, trial.trial_id, node)

    def _tasks_rows(self, trial_id: str) -> dict[int, dict]:
        path = results.part_path(self.experiment_dir, "tasks", trial_id)
        if not path.exists():
            return {}
        return lineage.by_trial(results.read_part(path, "tasks").to_pylist()).get(trial_id, {})  # _end: under _io

    def _end(self, trial: tune.experiment.Trial, error: str | None) -> None:
        """The runs row, from the tasks rows on disk (they survive a driver restart). A trial that continued
        from another's checkpoint (PBT) is summarised by the model it ended with: its lineage's rows, and a
        config whose per-task settings are the ones that model's tasks trained with (an exact rerun)."""
        rows = self._io(lineage.lineage, self._tasks_rows, trial.trial_id)
        config = RunConfig.from_dict(trial.config).resolve()
        if len(rows) == config.num_tasks:
            lived = {name: tuple(row[name] for row in rows) for name in PER_TASK_FIELDS}
            config = dataclasses.replace(config, **{name: values for name, values in lived.items() if values != tuple(
                config.task_value(name, task) for task in range(config.num_tasks))})
        common = results.common_columns(config.to_dict(), self.experiment, trial.trial_id,
                                        rows[-1]["node"] if rows else "")
        if error and len(rows) == common["num_tasks"]:
            # Every task is in Parquet, so the error came after the last one: a driver killed as the trial ended
            # can leave Tune resuming it from a checkpoint its last save had already deleted. Nothing was lost.
            log.info(f"[{trial.trial_id}] failed after learning every task ({error}); its results are whole")
            error = None
        status = "error" if error else "ok" if len(rows) == common["num_tasks"] else "stopped"
        runs_path = results.part_path(self.experiment_dir, "runs", trial.trial_id)
        if status == "ok" and runs_path.exists():
            ended = self._io(results.read_part, runs_path, "runs").to_pylist()
            if [(r["status"], r["tasks_done"]) for r in ended] == [("ok", len(rows))]:
                # It had ended before the driver was killed, but Tune had not yet saved that: Tune resumed it
                # from its last checkpoint, with nothing left to learn. Its row stands as written then.
                log.info(f"[{trial.trial_id}] had ended ok before the restart")
                return
        run = results.run_row(common, rows, status, error, trial.last_result.get("time_total_s"))
        self._io(results.write_part, self.experiment_dir, "runs", trial.trial_id, [run])
        acc = f", avg acc {rows[-1]['avg_acc']:.2f}" if rows else ""  # after the last task: the final ACC
        log.info(f"[{trial.trial_id}] {status} after {len(rows)}/{common['num_tasks']} tasks{acc}"
                 + (f": {error}" if error else ""))


def error_message(trial: tune.experiment.Trial) -> str:
    """The trial's latest exception as 'Type: message' (Tune keeps it wrapped in a RayTaskError).

    Read from the driver's own copy first: Tune writes it just before `on_trial_error` but copies it to the
    storage only at its next sync, so the storage may still hold none, or an earlier failure's."""
    local = trial.pickled_error_file
    if local and os.path.exists(local):
        with open(local, "rb") as handle:
            err = ray.cloudpickle.load(handle)
    else:
        err = trial.get_pickled_error()
    cause = getattr(err, "cause", None) or err
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    text = Path(trial.error_file).read_text() if trial.error_file and os.path.exists(trial.error_file) else ""
    lines = (text or str(trial.get_error() or "")).strip().splitlines()
    return lines[-1] if lines else "unknown error"
