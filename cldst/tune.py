"""Ray Tune glue: the function trainable over `continual.run`, and the driver-side callback that writes Parquet.

The trainable reports once per task learned (so `training_iteration` == tasks learned), each
report carrying a checkpoint of the run at that task boundary; a restarted or retried trial
resumes from `tune.get_checkpoint()` at the next task. The callback runs in the driver: it
upserts one `tasks/` row per task checkpoint (and one, `discarded`, per task a PBT exploit threw away) and
writes the trial's `runs/` row when the trial ends (ok, error, or stopped by a scheduler), through
`cldst.results`. Everything it needs after a driver restart is in the trial's tasks part file, so a resumed
sweep never duplicates rows. `continue_from_surviving_checkpoint` closes a gap in Tune's resume.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import tempfile
from pathlib import Path

import ray
import torch
from pyarrow.fs import FileSelector, FileType
from ray import tune
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult
from ray.tune.experiment import Trial

from cldst import checkpoint, continual, failures, lineage, results
from cldst.config import PER_TASK_FIELDS, RunConfig
from cldst.data import Benchmark

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")  # Tune's name for a trial's n-th checkpoint folder
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
        # PBT's rankings, (trial, task it preceded) -> members compared: the scheduler's `ranked_among`, which
        # sweeps.common hands over once it knows the scheduler Tune runs (on a rerun, the one the first run pickled)
        self.ranked_among: dict[tuple[str, int], int] = {}
        self.write_error: results.ResultsError | None = None
        self._seen: set[str] = set()  # trials on_step_begin has looked at
        self._dropped: set[tuple[str, int]] = set()  # (trial, task) an exploit threw away, its row written

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        """Before Tune starts a trial in this driver: a resumed trial whose checkpoint the killed driver had
        deleted continues from the first one made after it (continue_from_surviving_checkpoint)."""
        for trial in trials:
            if trial.trial_id not in self._seen:
                self._seen.add(trial.trial_id)
                if trial.status == Trial.PENDING:
                    continue_from_surviving_checkpoint(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: tune.experiment.Trial, result: dict,
                        **info) -> None:
        """The row of a task that a PBT exploit threw away before Tune kept its checkpoint: the member exploited
        at this report, or while Tune was still saving its own report's. Tune never calls `on_checkpoint` for
        those, so the row is written here, marked `discarded`, in the step of the exploit and so before Tune
        saves it; if the driver dies first, the member relearns the task and its row is replaced."""
        for member in trials:
            report = result if member is trial else member.last_result
            if member.status != Trial.PAUSED or not continues_another(member, report.get("tasks_done")):
                continue
            key = (member.trial_id, report["task"])
            if key not in self._dropped:
                self._dropped.add(key)
                if report["task"] not in self._io(self._tasks_rows, member.trial_id):
                    self._write(member, report, discarded=True)

    def on_checkpoint(self, iteration: int, trials: list, trial: tune.experiment.Trial, checkpoint: tune.Checkpoint,
                      **info) -> None:
        """A task's row is written once Tune holds the task's checkpoint (rather than on its result): a
        sweep interrupted at any point resumes each trial right after the last task in its Parquet, or, if
        the driver died between this write and Tune saving its state, relearns that task and replaces its row."""
        self._write(trial, trial.last_result)  # the report that carried this checkpoint

    def on_trial_complete(self, iteration: int, trials: list, trial: tune.experiment.Trial, **info) -> None:
        self._end(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: tune.experiment.Trial, **info) -> None:
        self._end(trial, *last_error(trial))

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

    def _write(self, trial: tune.experiment.Trial, report: dict, discarded: bool = False) -> None:
        """Upsert the row of the task `report` ended, with the settings it trained with (its config, from before
        any later exploit). A row that continues another member's checkpoint also marks the member's own row of
        the task before as discarded: the member dropped that model for the donor's."""
        config = RunConfig.from_dict(report.get("config", trial.config)).resolve().to_dict()
        common = results.common_columns(config, self.experiment, trial.trial_id, report["node"])
        rows = [results.task_row(common, report, report.get("parent_trial_id"), discarded,
                                 self.ranked_among.get((trial.trial_id, report["task"])))]
        if rows[0]["parent_trial_id"]:
            dropped = self._io(self._tasks_rows, trial.trial_id).get(report["task"] - 1)
            if dropped is not None and not dropped["discarded"]:
                rows.append({**dropped, "discarded": True})
        self._io(results.upsert_task_rows, self.experiment_dir, trial.trial_id, rows)
        what = ("discarded: PBT continues it from another member's checkpoint" if discarded else
                f"avg acc {report['avg_acc']:.2f}, acc on this task {report['acc_current']:.2f}, capacity used "
                f"{report['capacity_used']:.3f}, {report['images_per_second']:.0f} img/s")
        log.info(f"[{trial.trial_id}] task {report['tasks_done']}/{report['num_tasks']}: {what}")

    def _tasks_rows(self, trial_id: str) -> dict[int, dict]:
        """A trial's tasks rows by task: from its part and, once `cldst results compact` ran, the compacted files."""
        return {row["task"]: row for row in results.trial_rows(self.experiment_dir, "tasks", trial_id)}

    def _end(self, trial: tune.experiment.Trial, error: str | None, error_type: str | None = None) -> None:
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
            # Every task is in Parquet, so the error came after the last one: nothing was lost.
            log.info(f"[{trial.trial_id}] failed after learning every task ({error}); its results are whole")
            error = None
        status = "error" if error else "ok" if len(rows) == common["num_tasks"] else "stopped"
        if status == "ok":
            ended = self._io(results.trial_rows, self.experiment_dir, "runs", trial.trial_id)
            if [(r["status"], r["tasks_done"]) for r in ended] == [("ok", len(rows))]:
                # It had ended before the driver was killed, but Tune had not yet saved that: Tune resumed it
                # from its last checkpoint, with nothing left to learn. Its row stands as written then.
                log.info(f"[{trial.trial_id}] had ended ok before the restart")
                return
        failure = (failures.failure_of(trial) or failures.OWN) if status == "error" else None
        run = results.run_row(common, rows, status, error, trial.last_result.get("time_total_s"), failure,
                              error_type if status == "error" else None, failures.infra_retries(trial))
        self._io(results.write_part, self.experiment_dir, "runs", trial.trial_id, [run])
        acc = f", avg acc {rows[-1]['avg_acc']:.2f}" if rows else ""  # after the last task: the final ACC
        retried = f" ({run['infra_retries']} infrastructure failure(s) retried)" if run["infra_retries"] else ""
        log.info(f"[{trial.trial_id}] {status} after {len(rows)}/{common['num_tasks']} tasks{acc}{retried}"
                 + (f": {error}" if error else ""))


def continues_another(trial: Trial, tasks_done: int | None) -> bool:
    """Whether `trial` is set to continue from another trial's checkpoint made after `tasks_done` tasks: a PBT
    exploit (ray/tune/schedulers/pbt.py, _exploit) put the donor's checkpoint in its place."""
    saved = trial.latest_checkpoint_result
    own = trial.storage.trial_fs_path.rstrip("/") + "/"
    return saved is not None and not saved.checkpoint.path.startswith(own) and saved.metrics.get(
        "tasks_done") == tasks_done


def continue_from_surviving_checkpoint(trial: Trial) -> bool:
    """Point a resumed trial whose checkpoint is gone at the first checkpoint it made after that one; True if so.

    Tune deletes the checkpoints past `num_to_keep` the moment it registers a new one (ray/train/_internal/
    checkpoint_manager.py, register_checkpoint), but saves the experiment state that names the new one only at
    the end of that step (ray/tune/execution/tune_controller.py, step -> checkpoint). A driver killed in between
    leaves a state naming a deleted checkpoint, and Tune's restore fails on it (ray/tune/trainable/trainable.py,
    restore). Tune registers a trial's checkpoints in the order of their folders' numbers, so the first folder
    numbered past the state's count (`current_checkpoint_index`) is one it registered, after `on_checkpoint`
    had written its task's row. The trial continues from it, with the settings it was made with (a PBT member
    may have been exploited since the state was saved), and numbers its next checkpoint after it.
    """
    saved = trial.latest_checkpoint_result
    if saved is None:
        return False
    storage = trial.storage
    fs = storage.storage_filesystem
    if fs.get_file_info(saved.checkpoint.path).type != FileType.NotFound:
        return False
    later = sorted((int(found.group(1)), info.path) for info in fs.get_file_info(FileSelector(storage.trial_fs_path))
                   if info.type == FileType.Directory and (found := CHECKPOINT_DIR.fullmatch(info.base_name))
                   and int(found.group(1)) > storage.current_checkpoint_index)
    if not later:
        return False
    index, path = later[0]
    surviving = tune.Checkpoint(path, filesystem=fs)
    with surviving.as_directory() as folder:
        state = checkpoint.read(Path(folder) / CHECKPOINT_FILE)
        config = RunConfig.from_dict(trial.config).resolve().to_dict()
        saved_config = state.get("config", {}) if isinstance(state, dict) else {}  # check_state names a foreign file
        made_with = {name: value for name, value in saved_config.items()
                     if name in trial.config and name not in checkpoint.RUNTIME_ONLY and value != config.get(name)}
        checkpoint.check_state(state, {**config, **made_with}, path)  # a cldst checkpoint of this very run
    if made_with:
        trial.set_config({**trial.config, **made_with})
    manager = _CheckpointManager(trial.run_metadata.checkpoint_manager.checkpoint_config)
    manager.register_checkpoint(_TrainingResult(surviving, {**saved.metrics, "tasks_done": state["next_task"]}))
    trial.run_metadata.checkpoint_manager = manager  # setting it also drops the metadata's cached JSON
    storage.current_checkpoint_index = index
    trial.invalidate_json_state()
    log.warning(f"[{trial.trial_id}] its checkpoint {saved.checkpoint.path} was deleted before the killed driver saved "
                f"Tune's state; continuing from {path} (task {state['next_task']} learned)")
    return True


def last_error(trial: tune.experiment.Trial) -> tuple[str, str | None]:
    """The trial's latest exception as one line, 'Type: message' (Tune keeps it wrapped in a RayTaskError), and
    its type's name (None where only Tune's text of it is left).

    Read from the driver's own copy first: Tune writes it just before `on_trial_error` but copies it to the
    storage only at its next sync, so the storage may still hold none, or an earlier failure's."""
    local = trial.pickled_error_file
    if local and os.path.exists(local):
        with open(local, "rb") as handle:
            err = ray.cloudpickle.load(handle)
    else:
        err = trial.get_pickled_error()
    if err is not None:
        return failures.one_line(err), type(failures.cause(err)).__name__
    text = Path(trial.error_file).read_text() if trial.error_file and os.path.exists(trial.error_file) else ""
    lines = (text or str(trial.get_error() or "")).strip().splitlines()
    return (lines[-1] if lines else "unknown error"), None
