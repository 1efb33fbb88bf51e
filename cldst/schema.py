"""The Parquet results contract (docs/design.md): the schema of each kind, its versions, and the checks every
reader applies to a file before it merges its rows. Imports pyarrow only.

A results directory `<root>/<experiment>/` holds, per kind (`tasks`, `runs`):
- `part-<trial_id>.parquet`: one trial's rows, written by the sweep as the trial goes;
- `compact-<generation>.parquet`: finished trials' rows, merged by `cldst results compact`.
A row is identified by (experiment, trial_id) in `runs` and (experiment, trial_id, task) in `tasks`. Where
one key has rows in several files, the reader keeps the newest: a part file over any compacted file (a part
is written after, or is the very row, the compaction merged), and a higher generation over a lower one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

# 1: the version-1 columns (REQUIRED below) (files that hold exactly those stay readable forever; the
#    extras below that cldst 1 also wrote, and schema_version itself, read as null when absent).
# 2: protocol and val_fraction (config); tasks: val_acc, val_avg_acc, parent_trial_id; runs: val_acc,
#    val_acc_matrix.
# 3: tasks: discarded (a PBT member's task whose training an exploit threw away; null before version 3).
# 4: runs: failure ("infrastructure" or "own": the class of the error that ended the trial), error_type (its
#    exception's type) and infra_retries (infrastructure failures retried, none counted against --max-failures);
#    null before version 4.
# 5: tasks: ranked_among (how many PBT members the ranking before the task compared; null before version 5).
SCHEMA_VERSION = 5
FAILURES = ("infrastructure", "own")
KINDS = ("tasks", "runs")
RUN_STATUSES = ("ok", "error", "stopped")
PART_PATTERN = re.compile(r"^part-(?P<trial_id>[A-Za-z0-9_.-]+)\.parquet$")
COMPACT_PATTERN = re.compile(r"^compact-(?P<generation>[0-9]{6})\.parquet$")
KEYS = {"tasks": ["experiment", "trial_id", "task"], "runs": ["experiment", "trial_id"]}

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
    ("discarded", pa.bool_()),  # true: a PBT exploit replaced the weights it trained; later tasks build on a donor
    ("ranked_among", pa.int64()),  # PBT: members the ranking before this task compared; null: no ranking in its driver
    ("task_density", pa.float64()), ("capacity_used", pa.float64()),
    ("reused_fraction", pa.float64()), ("fired_fraction", pa.float64()),
    ("train_seconds", pa.float64()), ("images_per_second", pa.float64()),
    ("created_at", _TIMESTAMP),
])

RUNS_SCHEMA = pa.schema(_COMMON + [
    ("status", pa.string()), ("error", pa.string()),
    ("failure", pa.string()), ("error_type", pa.string()),  # null unless status is error: cldst.failures
    ("infra_retries", pa.int64()),  # a lost node, actor or worker, or unreachable storage, retried
    ("tasks_done", pa.int64()),
    ("acc_matrix", pa.list_(pa.list_(pa.float64()))),
    ("acc", pa.float64()), ("bwt", pa.float64()), ("fwt", pa.float64()),
    ("incremental_acc", pa.list_(pa.float64())),
    ("val_acc", pa.float64()), ("val_acc_matrix", pa.list_(pa.list_(pa.float64()))),  # null without a split
    ("total_seconds", pa.float64()),
    ("created_at", _TIMESTAMP),
])

SCHEMAS = {"tasks": TASKS_SCHEMA, "runs": RUNS_SCHEMA}
# tasks columns the writer sets, not the metrics
ROW_STAMPS = ("created_at", "parent_trial_id", "discarded", "ranked_among")
# The version-1 columns: a file must hold these; any other column it lacks reads as null.
REQUIRED = {
    "tasks": ["experiment", "trial_id", *CONFIG_COLUMNS[:15], "task", "acc", "avg_acc", "bwt", "task_density",
              "capacity_used", "reused_fraction", "fired_fraction", "train_seconds", "images_per_second",
              "created_at"],
    "runs": ["experiment", "trial_id", *CONFIG_COLUMNS[:15], "status", "error", "acc_matrix", "acc", "bwt", "fwt",
             "incremental_acc", "total_seconds", "created_at"],
}


class ResultsError(RuntimeError):
    """A results directory or part file that cannot be read as cldst results."""


def check_columns(path: Path, schema: pa.Schema, kind: str) -> None:
    missing = [name for name in REQUIRED[kind] if name not in schema.names]
    if missing:
        raise ResultsError(f"{path}: lacks the {kind} columns {missing} (found {schema.names}); "
                           f"not a cldst {kind} file")


def check_versions(path: Path, versions: set) -> None:
    newer = sorted(v for v in versions if v is None or v > SCHEMA_VERSION or v < 1)
    if newer:
        raise ResultsError(f"{path}: schema_version {newer}, but this cldst reads versions 1 to {SCHEMA_VERSION}; "
                           f"read it with the cldst that wrote it")


def conform(table: pa.Table, kind: str, where: object) -> pa.Table:
    """`table` in this version's schema: columns added after the file's version read as null (a file without
    `schema_version` is of version 1, so that column reads as 1)."""
    expected = SCHEMAS[kind]
    if "schema_version" not in table.column_names:
        table = table.append_column("schema_version", pa.array([1] * len(table), pa.int32()))
    for name in expected.names:
        if name not in table.column_names:
            table = table.append_column(expected.field(name), pa.nulls(len(table), expected.field(name).type))
    try:
        return table.select(expected.names).cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ResultsError(f"{where}: columns of the wrong type ({err})") from err
