"""Compaction: finished trials merged into one file per kind; every row read exactly once before, during and after,
through resumed rewrites, crashes and a sweep still writing."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cldst import compaction, reader, results
from cldst.cli import main as cli_main
from tests.test_results import CONFIG, task_metrics


def trial(folder: Path, trial_id: str, tasks: int = 3, finished: bool = True, base: float = 90.0) -> None:
    """A trial's parts as the sweep writes them: one tasks row per task, then (finished) its runs row."""
    common = results.common_columns(CONFIG, folder.name, trial_id, "node-a")
    for task in range(tasks):
        results.upsert_task_rows(folder, trial_id, [results.task_row(common, task_metrics(task, base - task))])
    if finished:
        rows = [task_metrics(task, base - task) for task in range(tasks)]
        results.write_part(folder, "runs", trial_id, [results.run_row(common, rows, "ok", None, 1.0)])


def keyed(folder: Path) -> dict[str, list[tuple]]:
    """Each kind's rows as (key..., avg or acc): a row twice or missing changes the list."""
    loaded = results.load(folder)
    return {"tasks": [(r["trial_id"], r["task"], r["avg_acc"]) for r in loaded.tasks.to_pylist()],
            "runs": [(r["trial_id"], r["acc"]) for r in loaded.runs.to_pylist()]}


def names(folder: Path, kind: str) -> list[str]:
    return sorted(path.name for path in (folder / kind).iterdir())


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Three finished trials and one still running (no runs row)."""
    folder = tmp_path / "exp"
    for trial_id, base in (("a", 90.0), ("b", 80.0), ("c", 70.0)):
        trial(folder, trial_id, base=base)
    trial(folder, "running", tasks=2, finished=False)
    return folder


def test_compaction_keeps_every_row_once_and_only_unfinished_parts(sweep: Path) -> None:
    before = keyed(sweep)
    done = compaction.compact(sweep)
    assert (done.generation, done.finished_trials, done.unfinished_trials, done.parts_removed) == (1, 3, 1, 6)
    assert names(sweep, "tasks") == ["compact-000001.parquet", "part-running.parquet"]
    assert names(sweep, "runs") == ["compact-000001.parquet"]
    assert keyed(sweep) == before and len(before["tasks"]) == 3 * 3 + 2
    assert results.load(sweep).tasks.schema == results.TASKS_SCHEMA


def test_compaction_is_idempotent(sweep: Path) -> None:
    compaction.compact(sweep)
    stamps = {path: path.stat().st_mtime_ns for path in sweep.rglob("*.parquet")}
    again = compaction.compact(sweep)
    assert again.generation is None and "already compact" in again.summary()
    assert {path: path.stat().st_mtime_ns for path in sweep.rglob("*.parquet")} == stamps


def test_a_resumed_trial_rewriting_its_rows_after_compaction_replaces_them_exactly_once(sweep: Path) -> None:
    compaction.compact(sweep)
    common = results.common_columns(CONFIG, sweep.name, "a", "node-b")
    results.upsert_task_rows(sweep, "a", [results.task_row(common, task_metrics(2, 50.0))])  # relearned task 2
    rows = keyed(sweep)
    assert [row for row in rows["tasks"] if row[0] == "a"] == [("a", 0, 90.0), ("a", 1, 89.0), ("a", 2, 50.0)]
    assert [task["avg_acc"] for task in results.trial_rows(sweep, "tasks", "a")] == [90.0, 89.0, 50.0]
    rows = [task_metrics(0, 90.0), task_metrics(1, 89.0), task_metrics(2, 50.0)]
    results.write_part(sweep, "runs", "a", [results.run_row(common, rows, "ok", None, 1.0)])
    rewritten = keyed(sweep)
    compaction.compact(sweep)
    assert keyed(sweep) == rewritten and ("a", 50.0) in rewritten["runs"] and len(rewritten["runs"]) == 3
    assert names(sweep, "runs") == ["compact-000002.parquet"]


def test_a_compaction_stopped_before_removing_what_it_merged_leaves_each_row_once(sweep: Path,
                                                                                 monkeypatch) -> None:
    before = keyed(sweep)
    compaction.compact(sweep)
    trial(sweep, "d")
    monkeypatch.setattr(compaction, "_remove_if_unchanged", lambda path, read: (_ for _ in ()).throw(OSError("kill")))
    with pytest.raises(OSError, match="kill"):
        compaction.compact(sweep)  # wrote compact-000002 for tasks, removed compact-000001, kept d's parts
    assert "part-d.parquet" in names(sweep, "tasks") and "compact-000002.parquet" in names(sweep, "tasks")
    assert "compact-000001.parquet" in names(sweep, "runs")
    expected = {kind: sorted(before[kind] + [row for row in keyed(sweep)[kind] if row[0] == "d"]) for kind in before}
    assert keyed(sweep) == expected
    monkeypatch.undo()
    compaction.compact(sweep)
    assert keyed(sweep) == expected and names(sweep, "runs") == ["compact-000003.parquet"]


def test_a_part_moved_aside_by_a_stopped_compaction_is_restored(sweep: Path) -> None:
    part = results.part_path(sweep, "tasks", "running")
    os.rename(part, part.with_name(f".{part.name}{compaction.LEFTOVER}"))
    assert ("running", 1, 89.0) not in keyed(sweep)["tasks"]
    compaction.compact(sweep)
    assert ("running", 1, 89.0) in keyed(sweep)["tasks"] and part.exists()


def test_a_stopped_compaction_s_half_written_file_goes_and_a_writing_part_s_temp_stays(sweep: Path) -> None:
    half = sweep / "tasks" / ".compact-000001.parquet.k1ll3d.tmp"
    half.write_bytes(b"PAR1 half")
    writing = sweep / "tasks" / ".part-running.parquet.w0rk1n.tmp"  # a sweep's write in flight: not compaction's
    writing.write_bytes(b"PAR1 half")
    compaction.compact(sweep)
    assert not half.exists() and writing.exists()


def test_a_part_rewritten_while_it_is_merged_stands(sweep: Path, monkeypatch) -> None:
    scan = compaction.scan
    common = results.common_columns(CONFIG, sweep.name, "b", "node-b")

    def rewrite_after_reading(paths, kind, bad, *args):
        tables = scan(paths, kind, bad, *args)
        if kind == "tasks" and any(path.name == "part-b.parquet" for path in paths):
            results.upsert_task_rows(sweep, "b", [results.task_row(common, task_metrics(0, 12.0))])
        return tables

    monkeypatch.setattr(compaction, "scan", rewrite_after_reading)
    done = compaction.compact(sweep)
    assert done.parts_kept == [str(results.part_path(sweep, "tasks", "b"))]
    assert [row for row in keyed(sweep)["tasks"] if row[0] == "b"][0] == ("b", 0, 12.0)


def test_a_reader_that_listed_files_a_compaction_removed_reads_again(sweep: Path, monkeypatch) -> None:
    before = keyed(sweep)
    listing, calls = reader.listing, []

    def compact_after_listing(folder, bad):
        listed = listing(folder, bad)
        calls.append(folder.name)
        if len(calls) == 1:
            compaction.compact(sweep)  # removes the parts just listed
        return listed

    monkeypatch.setattr(reader, "listing", compact_after_listing)
    assert keyed(sweep) == before
    assert calls[:2] == ["tasks", "tasks"]  # the first read found its files gone and listed again


def test_bad_files_are_named_and_neither_merged_nor_removed(sweep: Path) -> None:
    stray = sweep / "tasks" / "notes.txt"
    stray.write_text("hello")
    cut = sweep / "tasks" / "part-c.parquet"
    cut.write_bytes(cut.read_bytes()[:100])
    done = compaction.compact(sweep)
    assert {path for path, _reason in done.skipped} == {str(stray), str(cut)}
    assert stray.exists() and cut.exists()
    loaded = results.load(sweep, on_bad="skip")
    assert {path for path, _reason in loaded.skipped} == {str(stray), str(cut)}
    assert sorted({row["trial_id"] for row in loaded.tasks.to_pylist()}) == ["a", "b", "running"]


def test_version_1_parts_compact_and_read_as_version_1(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    trial(folder, "v1")
    for kind in results.KINDS:
        path = results.part_path(folder, kind, "v1")
        pq.write_table(pq.read_table(path).select(results.REQUIRED[kind]), path)  # the version-1 columns
    before = keyed(folder)
    compaction.compact(folder)
    assert keyed(folder) == before
    assert set(pq.read_table(folder / "tasks" / "compact-000001.parquet").column("schema_version").to_pylist()) == {1}


def test_two_compactions_of_one_folder_do_not_run_at_once(sweep: Path) -> None:
    with compaction._lock(sweep), pytest.raises(results.ResultsError, match="another compaction"):
        compaction.compact(sweep)


def test_rows_of_one_key_resolve_to_the_newest_file() -> None:
    row = pa.table({"experiment": ["e"], "trial_id": ["t"], "acc": [1.0]})
    newest = reader.resolve([(1, row), (3, row.set_column(2, "acc", pa.array([3.0]))),
                             (2, row.set_column(2, "acc", pa.array([2.0])))], "runs")
    assert newest.column("acc").to_pylist() == [3.0]


def test_the_cli_compacts_and_names_bad_input(sweep: Path, capsys) -> None:
    cli_main(["results", "compact", str(sweep.parent)])
    assert "3 finished trial(s) merged into compact-000001.parquet" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["results", "compact", str(sweep / "nowhere")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere: no such results directory" in err


def test_one_trials_rows_ignore_other_trials_files_and_strays(sweep: Path) -> None:
    compaction.compact(sweep)
    (sweep / "tasks" / "notes.txt").write_text("hello")
    (sweep / "tasks" / "part-broken.parquet").write_bytes(b"not parquet")
    trial(sweep, "late", tasks=2, finished=False)
    assert [row["task"] for row in results.trial_rows(sweep, "tasks", "late")] == [0, 1]
    assert [row["avg_acc"] for row in results.trial_rows(sweep, "tasks", "b")] == [80.0, 79.0, 78.0]
    assert results.trial_rows(sweep, "runs", "late") == []
    cut = results.part_path(sweep, "tasks", "late")
    cut.write_bytes(cut.read_bytes()[:50])
    with pytest.raises(results.ResultsError, match="part-late.parquet: not a readable Parquet file"):
        results.trial_rows(sweep, "tasks", "late")
