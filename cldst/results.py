"""Writing Parquet results (docs/design.md): the rows a trial produces and the atomic writer of its part files.

A results directory `<root>/<experiment>/` holds `tasks/part-<trial_id>.parquet` (one row per task learned)
and `runs/part-<trial_id>.parquet` (one row per finished trial); `cldst results compact` merges finished
trials' parts into `compact-<generation>.parquet` files (compaction.py). The schema is in schema.py, the
reader in reader.py. No torch and no ray: `analysis/` reads results on a laptop with neither.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cldst import metrics
from cldst.config import PER_TASK_FIELDS
from cldst.reader import Results, experiment_dirs, load, read_part, trial_rows
from cldst.schema import (
    CONFIG_COLUMNS,
    CONFIG_FIELDS,
    FAILURES,
    KINDS,
    PART_PATTERN,
    REQUIRED,
    ROW_STAMPS,
    RUN_STATUSES,
    RUNS_SCHEMA,
    SCHEMA_VERSION,
    SCHEMAS,
    TASKS_SCHEMA,
    ResultsError,
)

# The results API in one import: the contract (schema.py) and the reader (reader.py) beside the writer.
__all__ = ["CONFIG_COLUMNS", "CONFIG_FIELDS", "FAILURES", "KINDS", "REQUIRED", "RUNS_SCHEMA", "RUN_STATUSES", "SCHEMAS",
           "SCHEMA_VERSION", "TASKS_SCHEMA", "Results", "ResultsError", "check_writable", "common_columns",
           "experiment_dirs", "load", "now", "part_path", "read_part", "run_row", "task_row", "trial_rows",
           "upsert_task_rows", "write_part", "write_table"]

def common_columns(config: dict, experiment: str, trial_id: str, node: str) -> dict:
    """The columns every row carries, from a resolved RunConfig dict."""
    _check_trial_id(trial_id)
    row = {"schema_version": SCHEMA_VERSION, "experiment": experiment, "trial_id": trial_id, "node": node}
    row.update({name: _constant(config.get(name)) for name in CONFIG_COLUMNS})
    row["config_json"] = json.dumps(config, sort_keys=True)
    return row


def _constant(value: object) -> object:
    """A config column's value: a per-task schedule of one repeated value is that value; a varying one is null
    (the runs row then says "varies": each tasks row holds the value its task trained with)."""
    if isinstance(value, (list, tuple)):
        return value[0] if len(set(value)) == 1 else None
    return value


def task_row(common: dict, task_metrics: dict, parent_trial_id: str | None = None, discarded: bool = False,
             ranked_among: int | None = None) -> dict:
    """A `tasks` row: the common columns plus the schema's task metrics, picked by name from
    `task_metrics` (a TaskResult as a dict, or a Tune result); other keys are ignored. The per-task
    settings (density, growth, ...) are the ones that task trained with, where the metrics hold them. `discarded`:
    a PBT exploit replaced the weights this task trained by a donor's, so the member's later tasks do not build
    on it (the row keeps the member's curves and counts complete). `ranked_among`: how many PBT members the
    ranking before this task compared (the population, unless a rerun left some at other task boundaries)."""
    names = [name for name in TASKS_SCHEMA.names if name not in common and name not in ROW_STAMPS]
    settings = {name: task_metrics[name] for name in PER_TASK_FIELDS if task_metrics.get(name) is not None}
    return {**common, **settings, **{name: task_metrics[name] for name in names}, "parent_trial_id": parent_trial_id,
            "discarded": discarded, "ranked_among": ranked_among, "created_at": now()}


def run_row(common: dict, task_rows: list[dict], status: str, error: str | None,
            total_seconds: float | None, failure: str | None = None, error_type: str | None = None,
            infra_retries: int = 0) -> dict:
    """A `runs` row: the common columns, the run metrics of the tasks learned (`task_rows`: their
    TaskResults as dicts, or their tasks rows, in task order), and how it ended: `error` (one line), the
    `failure` class and `error_type` of an error (cldst.failures), the infrastructure failures retried."""
    if status not in RUN_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(RUN_STATUSES)}")
    if failure not in (None, *FAILURES):
        raise ValueError(f"failure: {failure!r} is not one of {', '.join(FAILURES)}")
    acc_rows = [row["acc"] for row in task_rows]
    empty = {"acc_matrix": [], "acc": None, "bwt": None, "fwt": None, "incremental_acc": []}
    summary = metrics.summary(acc_rows, [row["fwt_acc"] or [] for row in task_rows]) if acc_rows else empty
    val_rows = [row.get("val_acc") for row in task_rows]
    has_val = bool(val_rows) and all(row is not None for row in val_rows)
    return {**common, **summary, "status": status, "error": error, "failure": failure, "error_type": error_type,
            "infra_retries": infra_retries, "tasks_done": len(acc_rows),
            "val_acc": metrics.final_accuracy(val_rows) if has_val else None,
            "val_acc_matrix": [list(row) for row in val_rows] if has_val else None,
            "total_seconds": total_seconds, "created_at": now()}


def now() -> datetime:
    return datetime.now(timezone.utc)


def check_writable(directory: str | os.PathLike, min_free_bytes: int = 16 * 2**20) -> Path:
    """Fail before any work if results cannot be written under `directory`: it is not a folder,
    cannot be created or written (probed with a real temp file, which also catches read-only
    mounts when running as root), or its disk is nearly full. Creates nothing that stays."""
    path = Path(directory).absolute()
    if path.exists() and not path.is_dir():
        raise ResultsError(f"{path}: exists and is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ResultsError(f"{path}: cannot be created ({existing} is not a directory)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ResultsError(f"{path}: not writable ({err.strerror or err})") from None
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        raise ResultsError(f"{path}: only {free // 2**20} MiB free on its disk; free some space first")
    return path


def part_path(experiment_dir: str | os.PathLike, kind: str, trial_id: str) -> Path:
    _check_trial_id(trial_id)
    return Path(experiment_dir) / kind / f"part-{trial_id}.parquet"


def write_part(experiment_dir: str | os.PathLike, kind: str, trial_id: str, rows: list[dict]) -> Path:
    """Write one trial's rows of `kind`, atomically (write_table)."""
    schema = SCHEMAS[kind]
    for row in rows:
        missing, extra = set(schema.names) - set(row), set(row) - set(schema.names)
        if missing or extra:
            raise ValueError(f"{kind} row: missing columns {sorted(missing)}, unknown columns {sorted(extra)}")
    return write_table(pa.Table.from_pylist(rows, schema=schema), part_path(experiment_dir, kind, trial_id))


def write_table(table: pa.Table, final: Path) -> Path:
    """Write `table` to `final` atomically: a temp file in the same folder, then rename.

    A crash leaves either the old file or the new one under the final name, never a partial
    one; temp files start with '.' and the reader ignores them (a killed writer's: remove_killed_writes).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def remove_killed_writes(experiment_dir: str | os.PathLike, names: str = "part-*.parquet") -> int:
    """Remove the temp files (write_table's `.<name>.<random>.tmp`) that writers killed mid-write left under tasks/
    and runs/ for the files matching `names`; returns how many. Only where nothing else writes those files: a sweep
    as it starts (one driver writes an experiment's parts), a compaction under its lock (its compacted files). Not
    in write_table: a listing of the folder per write would cost ~27 ms at 20,000 parts, on the driver's thread."""
    removed = 0
    for kind in KINDS:
        for leftover in (Path(experiment_dir) / kind).glob(f".{names}.*.tmp"):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def upsert_task_rows(experiment_dir: str | os.PathLike, trial_id: str, rows: list[dict]) -> Path:
    """Add task rows to a trial's tasks part, replacing rows of the same task (a resumed or
    retried trial reports a task again: it must not appear twice)."""
    path = part_path(experiment_dir, "tasks", trial_id)
    kept = []
    if path.exists():
        new_tasks = {row["task"] for row in rows}
        kept = [row for row in read_part(path, "tasks").to_pylist() if row["task"] not in new_tasks]
    merged = sorted(kept + rows, key=lambda row: row["task"])
    return write_part(experiment_dir, "tasks", trial_id, merged)


def _check_trial_id(trial_id: str) -> None:
    if not PART_PATTERN.match(f"part-{trial_id}.parquet"):
        raise ValueError(f"trial_id: {trial_id!r} may hold only letters, digits, '_', '.' and '-'")
