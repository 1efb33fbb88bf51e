"""Parquet results -> tidy pandas DataFrames (one row per trial, or one per task learned).

All reading goes through `cldst.results.load`, the one reader of the schema; this module only
reshapes what it returns. Trials still running have `tasks` rows but no `runs` row yet: they
appear in the runs frame with status "running" and no final metrics, so they can be counted
and shown but never enter a mean.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from cldst.config import PER_TASK_FIELDS, command_line
from cldst.results import CONFIG_COLUMNS, experiment_dirs
from cldst.results import load as load_results

PathLike = str | os.PathLike
STATUSES = ("ok", "error", "stopped", "running")
IDENTITY = ["experiment", "trial_id"]
# Fields of the resolved config that say where or how a run executed, not what it computes.
NOT_A_SETTING = {"device"}
SCHEDULE = "_schedule"  # <setting>_schedule: the run's per-task values of a setting that varied over its tasks
UNRECORDED = "unrecorded"  # the protocol of runs written before it was recorded (schema version 1)
MAX_IMAGES = 100_000  # a task's evaluation set is never larger: a denominator above it is no count


@dataclass
class Loaded:
    """Everything the report needs from one or more results folders."""

    runs: pd.DataFrame  # one row per trial: config columns, status, final metrics, `command`
    tasks: pd.DataFrame  # one row per (trial, task learned)
    experiment_dirs: list[Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable files

    @property
    def experiments(self) -> list[str]:
        return sorted({d.name for d in self.experiment_dirs})


def load_all(paths: PathLike | Iterable[PathLike], on_bad: str = "skip") -> Loaded:
    """Read results under each path (an experiment folder or a folder of them).

    Raises cldst.results.ResultsError for a missing folder or one without cldst results; with
    on_bad="skip" (the default) unreadable part files are listed in `Loaded.skipped` instead.
    Giving the same experiment twice (a root and one of its experiments) does not duplicate rows.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    runs, tasks, dirs, skipped = [], [], [], []
    for path in paths:
        results = load_results(path, on_bad=on_bad)
        runs.append(results.runs)
        tasks.append(results.tasks)
        dirs += [d.resolve() for d in experiment_dirs(path)]
        skipped += results.skipped
    runs_df = pa.concat_tables(runs).to_pandas().drop_duplicates(IDENTITY, keep="last")
    tasks_df = pa.concat_tables(tasks).to_pandas().drop_duplicates(IDENTITY + ["task"], keep="last")
    runs_df = pd.concat([runs_df, _running_trials(runs_df, tasks_df)], ignore_index=True)
    return Loaded(runs=_tidy(runs_df, command=True), tasks=_tidy(tasks_df.sort_values(IDENTITY + ["task"])),
                  experiment_dirs=sorted(set(dirs)), skipped=sorted(set(skipped)))


def load(paths: PathLike | Iterable[PathLike], kind: str = "runs", on_bad: str = "skip") -> pd.DataFrame:
    """A tidy DataFrame for notebooks: kind="runs" (one row per trial) or kind="tasks".

    Columns: the config (including every field of the saved RunConfig), `split` ("5x2" =
    tasks x classes per task), then the metrics; runs also carry `status` (ok, error, stopped,
    running) and `command`, the `cldst train` line that reruns the trial. Skipped files are
    reported as a warning.
    """
    if kind not in ("runs", "tasks"):
        raise ValueError(f"kind: {kind!r} is not one of runs, tasks")
    loaded = load_all(paths, on_bad=on_bad)
    if loaded.skipped:
        warnings.warn(f"{len(loaded.skipped)} unreadable result file(s) left out, first: {loaded.skipped[0][1]}",
                      stacklevel=2)
    return loaded.runs if kind == "runs" else loaded.tasks


def settings(frame: pd.DataFrame) -> list[str]:
    """The columns that say what a run computes: the config (every saved field), seed excluded."""
    saved: set[str] = set()
    for text in frame["config_json"].dropna().unique():
        saved.update(json.loads(text))
    extras = sorted(c for c in saved - set(CONFIG_COLUMNS) - NOT_A_SETTING if c in frame.columns)
    schedules = [name + SCHEDULE for name in PER_TASK_FIELDS if name + SCHEDULE in frame.columns]
    return [c for c in CONFIG_COLUMNS if c != "seed"] + extras + schedules


def matching(frame: pd.DataFrame, values: pd.Series) -> pd.DataFrame:
    """Rows of `frame` equal to `values` in each of its columns; missing matches missing (None, NaN)."""
    same = pd.Series(True, index=frame.index)
    for column, value in values.items():
        same &= frame[column].isna() if pd.isna(value) else frame[column] == value
    return frame[same]


def ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs with a final ACC: the only ones that enter means."""
    return runs[(runs["status"] == "ok") & runs["acc"].notna()]


def accuracy_step(matrices: Iterable) -> float:
    """One evaluation image, in ACC points, for runs whose accuracy matrices (lists of rows, in %) are given; 0
    when it cannot be told. ACC is the mean over T tasks of 100 k_t / n_t, so one image of the largest task moves
    it by 100 / (T max n_t). n_t is the least common multiple of the reduced denominators of task t's final
    accuracies: the coarsest lattice they all lie on, which divides the true n_t (so the step errs large)."""
    sizes: dict[int, int] = {}
    tasks = 0
    for matrix in matrices:
        if matrix is None or len(matrix) == 0:
            continue
        final = list(matrix[-1])
        tasks = max(tasks, len(final))
        for t, value in enumerate(final):
            share = Fraction(float(value) / 100).limit_denominator(MAX_IMAGES)
            if abs(float(share) - float(value) / 100) > 1e-12:  # 100 k / n in float64 is closer than this
                return 0.0  # not a count of images (an average of several evaluations, say)
            sizes[t] = math.lcm(sizes.get(t, 1), share.denominator)
    if not sizes or max(sizes.values()) > MAX_IMAGES:
        return 0.0
    return 100.0 / (tasks * max(sizes.values()))


def _schedule(value: object) -> str | None:
    """A per-task setting's values as one hashable text ("0.2:0.1:0.1"), or None for one value for every task."""
    if not isinstance(value, list) or len(set(value)) < 2:
        return None
    return ":".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)


def _running_trials(runs: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """One row per trial that has reported tasks but not finished yet."""
    finished = pd.MultiIndex.from_frame(runs[IDENTITY])
    pending = tasks[~pd.MultiIndex.from_frame(tasks[IDENTITY]).isin(finished)]
    if pending.empty:
        return runs.iloc[0:0]
    latest = pending.groupby(IDENTITY, sort=False).agg(
        tasks_done=("task", "nunique"), created_at=("created_at", "max"))
    common = [c for c in runs.columns if c in tasks.columns and c not in ("acc", "bwt", "created_at")]
    rows = pending.drop_duplicates(IDENTITY, keep="last")[common].join(latest, on=IDENTITY)
    rows["status"] = "running"
    return rows.reindex(columns=runs.columns)


def _tidy(frame: pd.DataFrame, command: bool = False) -> pd.DataFrame:
    """Add the split label, every saved config field as a column and (`command`) the rerun command."""
    frame = frame.reset_index(drop=True)
    # Each distinct config once (a trial's rows share one; 10,000 trials x 10 tasks hold 10,000), then by code.
    codes, texts = pd.factorize(frame["config_json"])  # a row without one (version 1 files): code -1
    configs = [json.loads(text) for text in texts] + ([{}] if (codes < 0).any() else [])
    codes = np.where(codes < 0, len(configs) - 1, codes)
    extra = pd.DataFrame(configs).iloc[codes].set_index(frame.index)
    extra = extra[[c for c in extra.columns if c not in frame.columns]]
    frame = pd.concat([frame, extra], axis=1)
    for name in PER_TASK_FIELDS:  # a runs row holds null where the setting varied over tasks: its schedule keys it
        schedules = np.array([_schedule(config.get(name)) for config in configs], dtype=object)[codes]
        schedules[frame[name].notna().to_numpy()] = None  # a tasks row holds that task's value: no run-level key
        if any(schedules):
            frame[name + SCHEDULE] = schedules
    frame["protocol"] = frame["protocol"].fillna(UNRECORDED)  # a group key: missing must not drop a run
    frame["split"] = frame["num_tasks"].astype(str) + "x" + frame["classes_per_task"].astype(str)
    if command:
        frame["command"] = np.array([command_line(c) if c else None for c in configs], dtype=object)[codes]
    first = ["experiment", "trial_id", *CONFIG_COLUMNS, "split", *extra.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
