"""The Parquet results contract (DESIGN.md): schema, atomic writer, and the one reader.

A results directory `<root>/<experiment>/` holds `tasks/part-<trial_id>.parquet` (one row
per task learned) and `runs/part-<trial_id>.parquet` (one row per finished trial). This
module imports no torch and no ray: `analysis/` reads results on a laptop with neither.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cldst import metrics
from cldst.config import PER_TASK_FIELDS

# 1: the columns DESIGN.md lists as version 1 (files that hold exactly those stay readable forever; the
#    extras below that cldst 1 also wrote, and schema_version itself, read as null when absent).
# 2: protocol and val_fraction (config); tasks: val_acc, val_avg_acc, parent_trial_id; runs: val_acc,
#    val_acc_matrix.
SCHEMA_VERSION = 2
KINDS = ("tasks", "runs")
RUN_STATUSES = ("ok", "error", "stopped")
PART_PATTERN = re.compile(r"^part-(?P<trial_id>[A-Za-z0-9_.-]+)\.parquet$")

CONFIG_FIELDS = [
    ("benchmark", pa.string()), ("net", pa.string()), ("num_tasks", pa.int64()),
    ("classes_per_task", pa.int64()), ("sparse_init", pa.string()), ("growth", pa.string()),
    ("prune", pa.string()), ("density", pa.float64()), ("update_frequency", pa.int64()),
    ("death_rate", pa.float64()), ("epochs", pa.int64()), ("batch_size", pa.int64()),
    ("lr", pa.float64()), ("optimizer", pa.string()), ("seed", pa.int64()),
    ("protocol", pa.string()), ("val_fraction", pa.float64()),
]
CONFIG_COLUMNS = [name for name, _ in CONFIG_FIELDS]

_COMMON = [
    ("schema_version", pa.int32()), ("experiment", pa.string()), ("trial_id", pa.string()),
    *CONFIG_FIELDS,
    ("config_json", pa.string()),  # the whole resolved RunConfig, for exact reruns
    ("node", pa.string()),
]
_TIMESTAMP = pa.timestamp("us", tz="UTC")

TASKS_SCHEMA = pa.schema(_COMMON + [
    ("task", pa.int64()),
    ("acc", pa.list_(pa.float64())),  # accuracy (%) on tasks 0..task after learning `task`
    ("fwt_acc", pa.list_(pa.float64())),  # this task's subnetwork on later tasks (reference FWT)
    ("avg_acc", pa.float64()), ("bwt", pa.float64()),
    ("val_acc", pa.list_(pa.float64())), ("val_avg_acc", pa.float64()),  # null without a validation split
    ("parent_trial_id", pa.string()),  # the trial whose checkpoint this task started from; null: its own
    ("task_density", pa.float64()), ("capacity_used", pa.float64()),
    ("reused_fraction", pa.float64()), ("fired_fraction", pa.float64()),
    ("train_seconds", pa.float64()), ("images_per_second", pa.float64()),
    ("created_at", _TIMESTAMP),
])

RUNS_SCHEMA = pa.schema(_COMMON + [
    ("status", pa.string()), ("error", pa.string()),
    ("tasks_done", pa.int64()),
    ("acc_matrix", pa.list_(pa.list_(pa.float64()))),
    ("acc", pa.float64()), ("bwt", pa.float64()), ("fwt", pa.float64()),
    ("incremental_acc", pa.list_(pa.float64())),
    ("val_acc", pa.float64()), ("val_acc_matrix", pa.list_(pa.list_(pa.float64()))),  # null without a split
    ("total_seconds", pa.float64()),
    ("created_at", _TIMESTAMP),
])

SCHEMAS = {"tasks": TASKS_SCHEMA, "runs": RUNS_SCHEMA}
ROW_STAMPS = ("created_at", "parent_trial_id")  # tasks columns set by the writer, not taken from the metrics
# DESIGN.md's version-1 columns: a file must hold these; any other column it lacks reads as null.
REQUIRED = {
    "tasks": ["experiment", "trial_id", *CONFIG_COLUMNS[:15], "task", "acc", "avg_acc", "bwt", "task_density",
              "capacity_used", "reused_fraction", "fired_fraction", "train_seconds", "images_per_second",
              "created_at"],
    "runs": ["experiment", "trial_id", *CONFIG_COLUMNS[:15], "status", "error", "acc_matrix", "acc", "bwt", "fwt",
             "incremental_acc", "total_seconds", "created_at"],
}


class ResultsError(RuntimeError):
    """A results directory or part file that cannot be read as cldst results."""


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


def task_row(common: dict, task_metrics: dict, parent_trial_id: str | None = None) -> dict:
    """A `tasks` row: the common columns plus the schema's task metrics, picked by name from
    `task_metrics` (a TaskResult as a dict, or a Tune result); other keys are ignored. The per-task
    settings (density, growth, ...) are the ones that task trained with, where the metrics hold them."""
    names = [name for name in TASKS_SCHEMA.names if name not in common and name not in ROW_STAMPS]
    settings = {name: task_metrics[name] for name in PER_TASK_FIELDS if task_metrics.get(name) is not None}
    return {**common, **settings, **{name: task_metrics[name] for name in names}, "parent_trial_id": parent_trial_id,
            "created_at": now()}


def run_row(common: dict, task_rows: list[dict], status: str, error: str | None,
            total_seconds: float | None) -> dict:
    """A `runs` row: the common columns, the run metrics of the tasks learned (`task_rows`: their
    TaskResults as dicts, or their tasks rows, in task order), and how it ended."""
    if status not in RUN_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(RUN_STATUSES)}")
    acc_rows = [row["acc"] for row in task_rows]
    empty = {"acc_matrix": [], "acc": None, "bwt": None, "fwt": None, "incremental_acc": []}
    summary = metrics.summary(acc_rows, [row["fwt_acc"] or [] for row in task_rows]) if acc_rows else empty
    val_rows = [row.get("val_acc") for row in task_rows]
    has_val = bool(val_rows) and all(row is not None for row in val_rows)
    return {**common, **summary, "status": status, "error": error, "tasks_done": len(acc_rows),
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
    """Write one trial's rows of `kind`, atomically: a temp file in the same folder, then rename.

    A crash leaves either the old file or the new one under the final name, never a partial
    one; temp files start with '.' and the reader ignores them.
    """
    schema = SCHEMAS[kind]
    for row in rows:
        missing, extra = set(schema.names) - set(row), set(row) - set(schema.names)
        if missing or extra:
            raise ValueError(f"{kind} row: missing columns {sorted(missing)}, unknown columns {sorted(extra)}")
    table = pa.Table.from_pylist(rows, schema=schema)
    final = part_path(experiment_dir, kind, trial_id)
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


def read_part(path: str | os.PathLike, kind: str) -> pa.Table:
    """Read and check one part file; any problem is a ResultsError naming the file."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise ResultsError(f"{path}: not a readable Parquet file ({err})") from err
    _check_columns(path, table.schema, kind)
    versions = set(table.column("schema_version").to_pylist()) if "schema_version" in table.column_names else {1}
    _check_versions(path, versions)
    return _conform(table, kind, path)


def _check_columns(path: Path, schema: pa.Schema, kind: str) -> None:
    missing = [name for name in REQUIRED[kind] if name not in schema.names]
    if missing:
        raise ResultsError(f"{path}: lacks the {kind} columns {missing} (found {schema.names}); "
                           f"not a cldst {kind} file")


def _check_versions(path: Path, versions: set) -> None:
    newer = sorted(v for v in versions if v is None or v > SCHEMA_VERSION or v < 1)
    if newer:
        raise ResultsError(f"{path}: schema_version {newer}, but this cldst reads versions 1 to {SCHEMA_VERSION}; "
                           f"read it with the cldst that wrote it")


def _conform(table: pa.Table, kind: str, where: object) -> pa.Table:
    """`table` in this version's schema: columns added after the file's version read as null."""
    expected = SCHEMAS[kind]
    for name in expected.names:
        if name not in table.column_names:
            table = table.append_column(expected.field(name), pa.nulls(len(table), expected.field(name).type))
    try:
        return table.select(expected.names).cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ResultsError(f"{where}: columns of the wrong type ({err})") from err


LOCAL = pafs.LocalFileSystem()


def _footer(parquet: ds.ParquetFileFormat, path: Path, kind: str) -> tuple[ds.ParquetFileFragment, pa.Schema]:
    """One part file checked from its footer alone: readable, the kind's columns, a readable schema_version
    (from the column statistics cldst's writer stores; the column itself where they are missing)."""
    try:
        fragment = parquet.make_fragment(str(path), filesystem=LOCAL)
        schema = fragment.physical_schema
        _check_columns(path, schema, kind)
        versions: set = {1}
        if "schema_version" in schema.names:
            metadata = fragment.metadata
            versions = set()
            for group in range(metadata.num_row_groups):
                columns = metadata.row_group(group)
                column = next(columns.column(i) for i in range(columns.num_columns)
                              if columns.column(i).path_in_schema == "schema_version")
                stats = column.statistics
                if stats is None or not stats.has_min_max or stats.null_count:
                    versions = set(fragment.to_table(columns=["schema_version"]).column(0).to_pylist())
                    break
                versions |= {stats.min, stats.max}
    except (OSError, pa.ArrowException) as err:
        raise ResultsError(f"{path}: not a readable Parquet file ({err})") from err
    _check_versions(path, versions)
    return fragment, schema


def _read_kind(paths: list[Path], kind: str, bad: Callable[[Path, ResultsError], None]) -> list[pa.Table]:
    """The part files of one kind: each checked from its footer, then every file of one schema read in one
    Arrow scan (per-file reads in Python cost about 4x the scan). A file whose footer reads but whose data
    does not sends its schema's files back to the one-by-one reader, which names it."""
    parquet = ds.ParquetFileFormat()
    by_schema: dict[pa.Schema, list[tuple[Path, ds.ParquetFileFragment]]] = {}
    for path in paths:
        try:
            fragment, schema = _footer(parquet, path, kind)
        except ResultsError as err:
            bad(path, err)
            continue
        by_schema.setdefault(schema, []).append((path, fragment))
    tables = []
    for schema, members in by_schema.items():
        try:
            scanned = ds.FileSystemDataset([fragment for _path, fragment in members], schema, parquet).to_table()
            tables.append(_conform(scanned, kind, members[0][0]))
        except (OSError, pa.ArrowException, ResultsError):
            for path, _fragment in members:
                try:
                    tables.append(read_part(path, kind))
                except ResultsError as err:
                    bad(path, err)
    return tables


@dataclass
class Results:
    """Everything under a results folder: one table per kind, plus the files left out."""

    tasks: pa.Table
    runs: pa.Table
    experiments: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def experiment_dirs(root: str | os.PathLike) -> list[Path]:
    """`root` itself if it is an experiment folder, else the experiment folders inside it."""
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"{root}: {'a file, not a' if root.exists() else 'no such'} results directory")
    if any((root / kind).is_dir() for kind in KINDS):
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and any((p / k).is_dir() for k in KINDS))
    if not found:
        raise ResultsError(f"{root}: no cldst results here (expected tasks/ and runs/ folders, "
                           f"or experiment folders that hold them)")
    return found


def load(root: str | os.PathLike, on_bad: str = "raise") -> Results:
    """Read every part file under `root` (an experiment folder or a folder of them).

    A file that is not a valid part (stray name, truncated, wrong schema, newer version) raises
    ResultsError, or with on_bad="skip" is left out and listed in `Results.skipped`; no bad file is
    ever merged. Files being written (names starting with '.') are ignored. Each file's footer is
    checked on its own; the data of all files sharing a schema is read in one Arrow scan.
    """
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad: {on_bad!r} is not one of raise, skip")
    skipped: list[tuple[str, str]] = []

    def bad(path: Path, err: ResultsError) -> None:
        if on_bad == "raise":
            raise err
        skipped.append((str(path), str(err)))

    dirs = experiment_dirs(root)
    merged = {}
    for kind in KINDS:
        parts = []
        for exp_dir in dirs:
            folder = exp_dir / kind
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                if path.name.startswith("."):
                    continue
                if PART_PATTERN.match(path.name):
                    parts.append(path)
                else:
                    bad(path, ResultsError(f"{path}: stray file in a results folder (expected "
                                           f"part-<trial_id>.parquet)"))
        tables = _read_kind(parts, kind, bad)
        table = pa.concat_tables(tables) if tables else SCHEMAS[kind].empty_table()
        # the files' order (experiment folder, trial, task), whatever order the scans took them in
        merged[kind] = table.sort_by([("experiment", "ascending"), ("trial_id", "ascending")]
                                     + ([("task", "ascending")] if kind == "tasks" else []))
    return Results(tasks=merged["tasks"], runs=merged["runs"], experiments=[d.name for d in dirs],
                   skipped=sorted(skipped))


def _check_trial_id(trial_id: str) -> None:
    if not PART_PATTERN.match(f"part-{trial_id}.parquet"):
        raise ValueError(f"trial_id: {trial_id!r} may hold only letters, digits, '_', '.' and '-'")
