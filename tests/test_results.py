"""The Parquet contract: schema round-trip, no duplicate rows, bad files reported not merged."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cldst import reader, results
from cldst.config import RunConfig
from cldst.reader import read_part
from cldst.schema import SCHEMA_VERSION

CONFIG = RunConfig(benchmark="digits").resolve().to_dict()


def task_metrics(task: int, avg: float) -> dict:
    return {"task": task, "acc": [avg] * (task + 1), "fwt_acc": [], "avg_acc": avg, "bwt": 0.0, "val_acc": None,
            "val_avg_acc": None, "task_density": 0.2, "capacity_used": 0.2 * (task + 1), "reused_fraction": 0.1,
            "fired_fraction": 0.3, "train_seconds": 1.5, "images_per_second": 100.0}


def task_row(trial_id: str, task: int, avg: float, **stamps) -> dict:
    return results.task_row(results.common_columns(CONFIG, "exp", trial_id, "node-a"), task_metrics(task, avg),
                            **stamps)


def test_round_trip_keeps_schema_and_values(tmp_path):
    results.write_part(tmp_path, "tasks", "t1", [task_row("t1", 0, 90.0), task_row("t1", 1, 80.0)])
    loaded = results.load(tmp_path)
    assert loaded.tasks.schema == results.TASKS_SCHEMA
    assert loaded.tasks.column("avg_acc").to_pylist() == [90.0, 80.0]
    assert loaded.tasks.column("acc").to_pylist() == [[90.0], [80.0, 80.0]]
    assert loaded.tasks.column("growth").to_pylist() == ["random", "random"]
    assert loaded.runs.num_rows == 0 and loaded.experiments == [tmp_path.name]


# the configuration columns, which every reader of a results folder selects by name
CONTRACT_CONFIG_COLUMNS = ["benchmark", "net", "num_tasks", "classes_per_task", "sparse_init", "growth", "prune",
                           "density", "update_frequency", "death_rate", "epochs", "batch_size", "lr", "optimizer",
                           "seed", "protocol", "val_fraction"]


def test_every_configuration_column_round_trips_under_its_name(tmp_path):
    results.write_part(tmp_path, "tasks", "t1", [task_row("t1", 0, 90.0)])
    row = results.load(tmp_path).tasks.to_pylist()[0]
    assert {name: row[name] for name in CONTRACT_CONFIG_COLUMNS} == {name: CONFIG[name]
                                                                     for name in CONTRACT_CONFIG_COLUMNS}


@pytest.mark.parametrize("status", ["ok", "error", "stopped"])
def test_a_run_ends_ok_error_or_stopped(tmp_path, status):
    common = results.common_columns(CONFIG, "exp", "t1", "node-a")
    results.write_part(tmp_path, "runs", "t1", [results.run_row(common, [task_metrics(0, 90.0)], status, None, 1.0)])
    assert results.load(tmp_path).runs.column("status").to_pylist() == [status]
    with pytest.raises(ValueError, match=r"^status: 'running' is not one of ok, error, stopped$"):
        results.run_row(common, [], "running", None, None)


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
    assert reasons[str(truncated)].startswith(f"{truncated}: not a readable Parquet file (")


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 99])
def test_newer_schema_versions_are_refused_clearly(tmp_path, version):
    """The next version is as unknown as any later one: refused, with the file and its version named."""
    row = task_row("t1", 0, 90.0)
    path = results.write_part(tmp_path, "tasks", "t1", [row])
    table = pq.read_table(path)
    table = table.set_column(0, "schema_version", pa.array([version], pa.int32()))
    pq.write_table(table, path)
    with pytest.raises(results.ResultsError) as err:
        results.load(tmp_path)
    assert str(err.value) == (f"{path}: schema_version [{version}], but this cldst reads versions 1 to "
                              f"{SCHEMA_VERSION}; read it with the cldst that wrote it")


def test_a_part_file_outranks_every_compaction_generation(tmp_path):
    """Generations have six digits: even compact-999999 holds an older row than a trial's part file."""
    compacted = results.write_part(tmp_path, "tasks", "t1", [task_row("t1", 0, 10.0), task_row("t1", 1, 20.0)])
    compacted.rename(tmp_path / "tasks" / "compact-999999.parquet")
    results.write_part(tmp_path, "tasks", "t1", [task_row("t1", 0, 90.0)])
    assert results.load(tmp_path).tasks.column("avg_acc").to_pylist() == [90.0, 20.0]


def test_the_one_file_reader_checks_versions_too(tmp_path):
    """read_part, the reader a failed scan falls back to: version 1 without the column, newer versions refused."""
    table = pa.Table.from_pylist([task_row("t1", 0, 90.0)], schema=results.TASKS_SCHEMA)
    pq.write_table(table.drop_columns(["schema_version"]), tmp_path / "old.parquet")
    assert read_part(tmp_path / "old.parquet", "tasks").column("schema_version").to_pylist() == [1]
    pq.write_table(table.set_column(0, "schema_version", pa.array([99], pa.int32())), tmp_path / "new.parquet")
    with pytest.raises(results.ResultsError, match=r"new.parquet: schema_version \[99\]"):
        read_part(tmp_path / "new.parquet", "tasks")


def test_a_newer_version_in_any_row_group_is_refused(tmp_path):
    """Versions come from every row group's statistics, not the last one's."""
    table = pa.Table.from_pylist([task_row("t1", 0, 90.0), task_row("t1", 1, 80.0)], schema=results.TASKS_SCHEMA)
    table = table.set_column(0, "schema_version", pa.array([99, SCHEMA_VERSION], pa.int32()))
    (tmp_path / "tasks").mkdir()
    pq.write_table(table, tmp_path / "tasks" / "part-t1.parquet", row_group_size=1)
    assert pq.ParquetFile(tmp_path / "tasks" / "part-t1.parquet").num_row_groups == 2
    with pytest.raises(results.ResultsError, match=r"part-t1.parquet: schema_version \[99\]"):
        results.load(tmp_path)


def test_a_folder_of_experiments_lists_each(tmp_path):
    for name in ("a", "b"):
        results.write_part(tmp_path / name, "tasks", "t1", [task_row("t1", 0, 90.0)])
    assert results.load(tmp_path).experiments == ["a", "b"]  # a wrong folder: test_the_reader_names_each_problem


# Version 1 as docs/design.md lists it (no schema_version, none of cldst 1's extra columns), and as cldst 1 wrote it
# (schema_version 1 plus config_json, node, fwt_acc / tasks_done): both read, later columns as null.
V1_COLUMNS = {
    "tasks": ["experiment", "trial_id", *CONTRACT_CONFIG_COLUMNS[:15], "task", "acc", "avg_acc", "bwt", "task_density",
              "capacity_used", "reused_fraction", "fired_fraction", "train_seconds", "images_per_second",
              "created_at"],
    "runs": ["experiment", "trial_id", *CONTRACT_CONFIG_COLUMNS[:15], "status", "error", "acc_matrix", "acc", "bwt",
             "fwt", "incremental_acc", "total_seconds", "created_at"],
}
V1_EXTRAS = {"tasks": ["schema_version", "config_json", "node", "fwt_acc"],
             "runs": ["schema_version", "config_json", "node", "tasks_done"]}


@pytest.mark.parametrize("writer", ["design-v1", "cldst-1"])
def test_version_1_files_stay_readable(tmp_path, writer):
    common = results.common_columns(CONFIG, "exp", "t1", "node-a")
    rows = {"tasks": [task_row("t1", 0, 90.0), task_row("t1", 1, 80.0)],
            "runs": [results.run_row(common, [task_metrics(0, 90.0), task_metrics(1, 80.0)], "ok", None, 3.0)]}
    for kind, kind_rows in rows.items():
        columns = V1_COLUMNS[kind] + (V1_EXTRAS[kind] if writer == "cldst-1" else [])
        table = pa.Table.from_pylist(kind_rows, schema=results.SCHEMAS[kind]).select(columns)
        if writer == "cldst-1":
            where = table.schema.get_field_index("schema_version")
            table = table.set_column(where, "schema_version", pa.array([1] * len(table), pa.int32()))
        (tmp_path / kind).mkdir()
        pq.write_table(table, tmp_path / kind / "part-t1.parquet")
    loaded = results.load(tmp_path)
    assert loaded.tasks.schema == results.TASKS_SCHEMA and loaded.runs.schema == results.RUNS_SCHEMA
    tasks, runs = loaded.tasks.to_pylist(), loaded.runs.to_pylist()
    assert [t["avg_acc"] for t in tasks] == [90.0, 80.0] and runs[0]["acc"] == 80.0
    assert all(t["protocol"] is None and t["val_acc"] is None and t["parent_trial_id"] is None for t in tasks)
    assert runs[0]["val_acc_matrix"] is None
    assert runs[0]["config_json"] is None if writer == "design-v1" else runs[0]["config_json"] == common["config_json"]


def test_a_file_lacking_version_1_columns_says_what_it_found(tmp_path):
    table = pa.Table.from_pylist([task_row("t1", 0, 90.0)], schema=results.TASKS_SCHEMA).drop_columns(["acc"])
    (tmp_path / "tasks").mkdir()
    pq.write_table(table, tmp_path / "tasks" / "part-t1.parquet")
    with pytest.raises(results.ResultsError) as err:
        results.load(tmp_path)
    assert str(err.value) == (f"{tmp_path}/tasks/part-t1.parquet: lacks the tasks columns ['acc'] (found "
                              f"{table.schema.names}); not a cldst tasks file")


def test_a_column_of_the_wrong_type_is_named(tmp_path):
    table = pa.Table.from_pylist([task_row("t1", 0, 90.0)], schema=results.TASKS_SCHEMA)
    table = table.set_column(table.schema.get_field_index("task"), "task", pa.array(["first"]))
    (tmp_path / "tasks").mkdir()
    pq.write_table(table, tmp_path / "tasks" / "part-t1.parquet")
    with pytest.raises(results.ResultsError, match=rf"^{tmp_path}/tasks/part-t1.parquet: columns of the wrong type "
                                                   r"\(.+\)$"):
        results.load(tmp_path)


def test_validation_columns_round_trip(tmp_path):
    common = results.common_columns(RunConfig(benchmark="digits", val_fraction=0.1).resolve().to_dict(), "e", "t",
                                    "n")
    rows = [{**task_metrics(t, 90.0 - t), "val_acc": [80.0] * (t + 1), "val_avg_acc": 80.0} for t in range(2)]
    run = results.run_row(common, rows, "ok", None, 1.0)
    assert run["val_acc"] == 80.0 and run["val_acc_matrix"] == [[80.0], [80.0, 80.0]]
    results.write_part(tmp_path, "runs", "t", [run])
    loaded = results.load(tmp_path).runs.to_pylist()[0]
    assert (loaded["val_fraction"], loaded["protocol"], loaded["val_acc"]) == (0.1, "clean", 80.0)


def test_a_file_damaged_past_its_footer_is_named_and_the_rest_of_its_scan_still_reads(tmp_path):
    """The reader checks footers one by one, then scans every file of one schema at once: a file whose footer
    is sound but whose data is not must still be named alone, and its neighbours read."""
    for trial in ("a", "b", "c"):
        path = results.write_part(tmp_path, "tasks", trial, [task_row(trial, 0, 90.0), task_row(trial, 1, 80.0)])
    data = bytearray(path.read_bytes())  # part-c: overwrite the column chunks, keep the footer
    footer = int.from_bytes(data[-8:-4], "little") + 8
    data[4:len(data) - footer] = b"\xff" * (len(data) - footer - 4)
    path.write_bytes(bytes(data))
    loaded = results.load(tmp_path, on_bad="skip")
    assert loaded.tasks.column("trial_id").to_pylist() == ["a", "a", "b", "b"]
    assert [p for p, _reason in loaded.skipped] == [str(path)]
    with pytest.raises(results.ResultsError, match="part-c.parquet"):
        results.load(tmp_path)


def test_schema_version_is_read_from_the_footer_or_the_column(tmp_path):
    """cldst's writer stores column statistics, so versions come from the footer; a writer that stores none
    makes the reader read the column, with the same verdicts."""
    results.write_part(tmp_path, "tasks", "stats", [task_row("stats", 0, 90.0)])
    table = pa.Table.from_pylist([task_row("plain", 0, 90.0)], schema=results.TASKS_SCHEMA)
    pq.write_table(table, tmp_path / "tasks" / "part-plain.parquet", write_statistics=False)
    assert results.load(tmp_path).tasks.num_rows == 2
    newer = table.set_column(0, "schema_version", pa.array([99], pa.int32()))
    pq.write_table(newer, tmp_path / "tasks" / "part-plain.parquet", write_statistics=False)
    with pytest.raises(results.ResultsError, match=r"part-plain.parquet: schema_version \[99\]"):
        results.load(tmp_path)


# The columns each schema version added (cldst/schema.py): a file of version N holds none of a later version's.
ADDED = {2: {"tasks": ["protocol", "val_fraction", "val_acc", "val_avg_acc", "parent_trial_id"],
             "runs": ["protocol", "val_fraction", "val_acc", "val_acc_matrix"]},
         3: {"tasks": ["discarded"], "runs": []},
         4: {"tasks": [], "runs": ["failure", "error_type", "infra_retries"]},
         5: {"tasks": ["ranked_among"], "runs": []}}


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_older_version_reads_with_the_later_columns_as_null(tmp_path, version):
    assert results.SCHEMA_VERSION == max(ADDED)  # a new version adds its columns here
    common = results.common_columns(CONFIG, "exp", "t1", "node-a")
    rows = {"tasks": [task_row("t1", 0, 90.0, parent_trial_id="t0", discarded=True),
                      task_row("t1", 1, 80.0, ranked_among=4)],
            "runs": [results.run_row(common, [task_metrics(0, 90.0), task_metrics(1, 80.0)], "error",
                                     "RuntimeError: boom", 3.0, "own", "RuntimeError", 2)]}
    for kind, kind_rows in rows.items():
        later = [name for v, added in ADDED.items() if v > version for name in added[kind]]
        table = pa.Table.from_pylist(kind_rows, schema=results.SCHEMAS[kind]).drop_columns(later)
        where = table.schema.get_field_index("schema_version")
        table = table.set_column(where, "schema_version", pa.array([version] * len(table), pa.int32()))
        (tmp_path / kind).mkdir()
        pq.write_table(table, tmp_path / kind / "part-t1.parquet")
    loaded = results.load(tmp_path)
    assert loaded.tasks.schema == results.TASKS_SCHEMA and loaded.runs.schema == results.RUNS_SCHEMA
    for kind, table in (("tasks", loaded.tasks), ("runs", loaded.runs)):
        assert table.column("schema_version").to_pylist() == [version] * table.num_rows
        for v, added in ADDED.items():
            for name in added[kind]:
                written = [None] * table.num_rows if v > version else [row[name] for row in rows[kind]]
                assert table.column(name).to_pylist() == written, (kind, name)
    run = loaded.runs.to_pylist()[0]
    assert (run["status"], run["error"], run["acc"]) == ("error", "RuntimeError: boom", 80.0)


def test_a_run_row_records_its_failure_class_type_and_retries(tmp_path):
    common = results.common_columns(CONFIG, "exp", "t1", "node-a")
    row = results.run_row(common, [task_metrics(0, 90.0)], "error", "ActorDiedError: the actor died", 1.0,
                          "infrastructure", "ActorDiedError", 20)
    results.write_part(tmp_path, "runs", "t1", [row])
    run = results.load(tmp_path).runs.to_pylist()[0]
    assert (run["failure"], run["error_type"], run["infra_retries"], run["schema_version"]) == (
        "infrastructure", "ActorDiedError", 20, results.SCHEMA_VERSION)
    with pytest.raises(ValueError, match="failure"):
        results.run_row(common, [], "error", "x", 1.0, "the network")


def test_the_reader_names_each_problem_in_full(tmp_path):
    """The messages a user acts on, whole: a stray file, a file or nothing where a results folder should be, a
    folder with no results, and a wrong on_bad."""
    results.write_part(tmp_path / "exp", "tasks", "t1", [task_row("t1", 0, 90.0)])
    (tmp_path / "exp" / "tasks" / "notes.txt").write_text("hello")
    (tmp_path / "notes").mkdir()  # a folder beside the experiment that holds no results: not an experiment
    assert results.experiment_dirs(tmp_path) == [tmp_path / "exp"]
    stray = tmp_path / "exp" / "tasks" / "notes.txt"
    assert dict(results.load(tmp_path, on_bad="skip").skipped) == {str(stray): (
        f"{stray}: stray file in a results folder (expected part-<trial_id>.parquet or "
        "compact-<generation>.parquet)")}
    expected = {tmp_path / "exp" / "tasks" / "part-t1.parquet": "a file, not a results directory",
                tmp_path / "missing": "no such results directory",
                tmp_path / "notes": "no cldst results here (expected tasks/ and runs/ folders, or experiment "
                                    "folders that hold them)"}
    for root, message in expected.items():
        with pytest.raises(results.ResultsError) as raised:
            results.load(root)
        assert str(raised.value) == f"{root}: {message}"
    with pytest.raises(ValueError) as raised:
        results.load(tmp_path, on_bad="ignore")
    assert str(raised.value) == "on_bad: 'ignore' is not one of raise, skip"
    assert results.Results(pa.table({}), pa.table({}), []).skipped == []


@pytest.mark.parametrize("vanishings, error", [(1, None), (reader.RELISTS, "files kept vanishing")])
def test_files_that_vanish_while_read_are_listed_again_up_to_a_bound(tmp_path, monkeypatch, vanishings, error):
    """A compaction that replaces files under a reader sends it back to the listing; past RELISTS tries it gives
    up, naming the experiment folder."""
    results.write_part(tmp_path, "tasks", "t1", [task_row("t1", 0, 90.0)])
    scan, calls = reader.scan, []

    def vanishing(paths, *args, **kwargs):
        calls.append(paths)
        if len(calls) <= vanishings:
            raise reader._Vanished(paths[0])
        return scan(paths, *args, **kwargs)

    monkeypatch.setattr(reader, "scan", vanishing)
    if error is None:
        assert results.load(tmp_path).tasks.num_rows == 1
        return
    with pytest.raises(results.ResultsError) as raised:
        results.load(tmp_path)
    assert str(raised.value) == (f"{tmp_path}: files kept vanishing while read ({reader.RELISTS} times); is a "
                                 "compaction running in a loop?")
