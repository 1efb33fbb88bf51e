"""The Parquet contract: schema round-trip, no duplicate rows, bad files reported not merged."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cldst import results
from cldst.config import RunConfig

CONFIG = RunConfig(benchmark="digits").resolve().to_dict()


def task_row(trial_id: str, task: int, avg: float) -> dict:
    common = results.common_columns(CONFIG, "exp", trial_id, "node-a")
    return {**common, "task": task, "acc": [avg] * (task + 1), "fwt_acc": [], "avg_acc": avg, "bwt": 0.0,
            "task_density": 0.2, "capacity_used": 0.2 * (task + 1), "reused_fraction": 0.1,
            "fired_fraction": 0.3, "train_seconds": 1.5, "images_per_second": 100.0, "created_at": results.now()}


def test_round_trip_keeps_schema_and_values(tmp_path):
    results.write_part(tmp_path, "tasks", "t1", [task_row("t1", 0, 90.0), task_row("t1", 1, 80.0)])
    loaded = results.load(tmp_path)
    assert loaded.tasks.schema == results.TASKS_SCHEMA
    assert loaded.tasks.column("avg_acc").to_pylist() == [90.0, 80.0]
    assert loaded.tasks.column("acc").to_pylist() == [[90.0], [80.0, 80.0]]
    assert loaded.tasks.column("growth").to_pylist() == ["random", "random"]
    assert loaded.runs.num_rows == 0 and loaded.experiments == [tmp_path.name]


def test_upsert_replaces_a_reported_task_instead_of_duplicating(tmp_path):
    results.upsert_task_rows(tmp_path, "t1", [task_row("t1", 0, 90.0)])
    results.upsert_task_rows(tmp_path, "t1", [task_row("t1", 1, 80.0)])
    results.upsert_task_rows(tmp_path, "t1", [task_row("t1", 1, 81.0)])  # a retry reports task 1 again
    tasks = results.load(tmp_path).tasks
    assert tasks.column("task").to_pylist() == [0, 1]
    assert tasks.column("avg_acc").to_pylist() == [90.0, 81.0]


def test_rows_must_match_the_schema(tmp_path):
    row = task_row("t1", 0, 90.0)
    del row["bwt"]
    with pytest.raises(ValueError, match="bwt"):
        results.write_part(tmp_path, "tasks", "t1", [row])
    with pytest.raises(ValueError, match="trial_id"):
        results.part_path(tmp_path, "tasks", "../escape")


def test_stray_truncated_and_foreign_files_are_reported(tmp_path):
    good = results.write_part(tmp_path, "tasks", "good", [task_row("good", 0, 90.0)])
    (tmp_path / "tasks" / "notes.txt").write_text("hello")
    truncated = tmp_path / "tasks" / "part-cut.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    pq.write_table(pa.table({"x": [1]}), tmp_path / "tasks" / "part-foreign.parquet")
    (tmp_path / "tasks" / ".part-writing.parquet.123.tmp").write_bytes(b"half")  # a writer at work: ignored
    with pytest.raises(results.ResultsError):
        results.load(tmp_path)
    loaded = results.load(tmp_path, on_bad="skip")
    assert loaded.tasks.num_rows == 1
    reasons = dict(loaded.skipped)
    assert set(reasons) == {str(tmp_path / "tasks" / n) for n in ("notes.txt", "part-cut.parquet",
                                                                   "part-foreign.parquet")}
    assert "not a readable Parquet file" in reasons[str(truncated)]


def test_newer_schema_versions_are_refused_clearly(tmp_path):
    row = task_row("t1", 0, 90.0)
    path = results.write_part(tmp_path, "tasks", "t1", [row])
    table = pq.read_table(path)
    table = table.set_column(0, "schema_version", pa.array([99], pa.int32()))
    pq.write_table(table, path)
    with pytest.raises(results.ResultsError, match="schema_version"):
        results.load(tmp_path)


def test_a_folder_of_experiments_and_a_wrong_folder(tmp_path):
    for name in ("a", "b"):
        results.write_part(tmp_path / name, "tasks", "t1", [task_row("t1", 0, 90.0)])
    assert results.load(tmp_path).experiments == ["a", "b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(results.ResultsError, match="no cldst results"):
        results.load(tmp_path / "empty")
    with pytest.raises(results.ResultsError, match="no such"):
        results.load(tmp_path / "missing")
