"""The one reader of a results folder: every file checked from its footer, every row read in a few Arrow scans,
each row key resolved to its newest file (schema.py states the rule). Imports pyarrow and numpy only.

A compaction may delete files while a reader lists and opens them: a listed file that vanished sends the
whole read back to the listing (the rows it held are then in the compacted file that replaced it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cldst.schema import (
    COMPACT_PATTERN,
    KEYS,
    KINDS,
    PART_PATTERN,
    SCHEMAS,
    ResultsError,
    check_columns,
    check_versions,
    conform,
)

LOCAL = pafs.LocalFileSystem()
PART_RANK = 10**6  # above every compaction generation (six digits): a part file holds a key's newest row
RELISTS = 5  # reads sent back to the listing by vanished files before giving up


class StrayFile(ResultsError):
    """A file in a results folder that is neither a part nor a compacted file."""


class _Vanished(Exception):
    """A listed file is gone (a compaction replaced it): read again from the listing."""


def _unreadable(path: Path, err: Exception) -> ResultsError:
    if not path.exists():
        raise _Vanished(path) from err
    return ResultsError(f"{path}: not a readable Parquet file ({err})")


def read_part(path: str | os.PathLike, kind: str) -> pa.Table:
    """Read and check one part (or compacted) file; any problem is a ResultsError naming the file."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise _unreadable(path, err) from err
    check_columns(path, table.schema, kind)
    versions = set(table.column("schema_version").to_pylist()) if "schema_version" in table.column_names else {1}
    check_versions(path, versions)
    return conform(table, kind, path)


def _footer(parquet: ds.ParquetFileFormat, path: Path, kind: str) -> tuple[ds.ParquetFileFragment, pa.Schema]:
    """One file checked from its footer alone: readable, the kind's columns, a readable schema_version (from the
    column statistics cldst's writer stores; the column itself where they are missing)."""
    try:
        fragment = parquet.make_fragment(str(path), filesystem=LOCAL)
        schema = fragment.physical_schema
        check_columns(path, schema, kind)
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
        raise _unreadable(path, err) from err
    check_versions(path, versions)
    return fragment, schema


def scan(paths: list[Path], kind: str, bad: Callable[[Path, ResultsError], None],
          expression: pc.Expression | None = None) -> list[pa.Table]:
    """The files' rows in this version's schema: each file checked from its footer, then every file of one schema
    read in one Arrow scan (per-file reads in Python cost about 4x the scan). A file whose footer reads but whose
    data does not sends its schema's files back to the one-by-one reader, which names it."""
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
            dataset = ds.FileSystemDataset([fragment for _path, fragment in members], schema, parquet)
            tables.append(conform(dataset.to_table(filter=expression), kind, members[0][0]))
        except (OSError, pa.ArrowException, ResultsError):
            for path, _fragment in members:
                try:
                    table = read_part(path, kind)
                    tables.append(table.filter(expression) if expression is not None else table)
                except ResultsError as err:
                    bad(path, err)
    return tables


def resolve(ranked: list[tuple[int, pa.Table]], kind: str) -> pa.Table:
    """One row per key (schema.KEYS): of the rows sharing a key, the one from the highest-ranked table (a part
    file ranks PART_RANK, a compacted file its generation). Without compacted files no key repeats."""
    tables = [table for _rank, table in ranked if len(table)]
    if not tables:
        return SCHEMAS[kind].empty_table()
    table = pa.concat_tables(tables)
    if len({rank for rank, table in ranked if len(table)}) < 2:
        return table
    ranks = np.concatenate([np.full(len(table), rank, np.int64) for rank, table in ranked if len(table)])
    order = ranks << 32 | np.arange(len(table), dtype=np.int64)  # max(order) within a key: its newest row
    keys = table.select(KEYS[kind]).append_column("order", pa.array(order))
    newest = keys.group_by(KEYS[kind], use_threads=False).aggregate([("order", "max")]).column("order_max")
    return table.take(np.sort(newest.to_numpy() & 0xFFFFFFFF))


def listing(folder: Path, bad: Callable[[Path, ResultsError], None]) -> list[tuple[int, list[Path]]]:
    """A kind folder's files by rank, highest first: its parts, then its compacted files, newest first."""
    parts, compacts = [], []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith("."):  # being written, or a compaction's working file
            continue
        if PART_PATTERN.match(path.name):
            parts.append(path)
        elif match := COMPACT_PATTERN.match(path.name):
            compacts.append((int(match["generation"]), [path]))
        else:
            bad(path, StrayFile(f"{path}: stray file in a results folder (expected part-<trial_id>.parquet or "
                                f"compact-<generation>.parquet)"))
    return [(PART_RANK, parts), *sorted(compacts, reverse=True)]


def read_kind(folders: list[Path], kind: str, bad: Callable[[Path, ResultsError], None],
              trial_id: str | None = None) -> pa.Table:
    """Every row of one kind under `folders` (each an experiment folder's `tasks/` or `runs/`), one per key; with
    `trial_id`, that trial's rows only, from its own part and the compacted files (other files go unread)."""
    expression = pc.field("trial_id") == trial_id if trial_id is not None else None
    for _attempt in range(RELISTS):
        skipped: list[tuple[Path, ResultsError]] = []  # told to `bad` once the listing held still

        def later(path: Path, err: ResultsError, skipped: list = skipped) -> None:
            skipped.append((path, err))

        try:
            ranked = []
            for folder in folders:
                for rank, paths in listing(folder, later):
                    if trial_id is not None and rank == PART_RANK:
                        paths = [path for path in paths if path.name == f"part-{trial_id}.parquet"]
                    ranked += [(rank, table) for table in scan(paths, kind, later, expression)]
        except _Vanished:
            continue
        for path, err in skipped:
            if trial_id is None or not isinstance(err, StrayFile):
                bad(path, err)
        return resolve(ranked, kind)
    raise ResultsError(f"{folders[0].parent}: files kept vanishing while read ({RELISTS} times); is a compaction "
                       f"running in a loop?")


def trial_rows(experiment_dir: str | os.PathLike, kind: str, trial_id: str) -> list[dict]:
    """One trial's rows of `kind`, from its part and the compacted files, one per key (tasks: in task order).
    An unreadable file among those raises ResultsError; other trials' files and stray files are not read."""
    def bad(path: Path, err: ResultsError) -> None:
        raise err

    table = read_kind([Path(experiment_dir) / kind], kind, bad, trial_id)
    return (table.sort_by("task") if kind == "tasks" else table).to_pylist()


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
    """Read every results file under `root` (an experiment folder or a folder of them).

    A file that is not a valid part or compacted file (stray name, truncated, wrong schema, newer version) raises
    ResultsError, or with on_bad="skip" is left out and listed in `Results.skipped`; no bad file is ever merged.
    Files being written (names starting with '.') are ignored. A key found in several files reads once, from the
    newest (schema.py). Rows are in (experiment, trial_id[, task]) order.
    """
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad: {on_bad!r} is not one of raise, skip")
    skipped: list[tuple[str, str]] = []

    def bad(path: Path, err: ResultsError) -> None:
        if on_bad == "raise":
            raise err
        skipped.append((str(path), str(err)))

    dirs = experiment_dirs(root)
    merged = {kind: read_kind([d / kind for d in dirs], kind, bad).sort_by([(key, "ascending") for key in KEYS[kind]])
              for kind in KINDS}
    return Results(tasks=merged["tasks"], runs=merged["runs"], experiments=[d.name for d in dirs],
                   skipped=sorted(skipped))
