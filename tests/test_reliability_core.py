"""Core reliability: a killed or out-of-space writer never leaves a partial part file under its
final name; unwritable results paths fail up front; crafted checkpoints never run code."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
from read_only import needs_read_only_proc

from cldst import checkpoint, results
from cldst.cli import main
from cldst.config import RunConfig

WRITER = textwrap.dedent("""
    import sys
    from cldst import results
    from cldst.config import RunConfig
    config = RunConfig(benchmark="digits").resolve().to_dict()
    common = results.common_columns(config, "exp", "t1", "node")
    rows = [{**common, "status": "ok", "error": None, "failure": None, "error_type": None, "infra_retries": 0,
             "tasks_done": 5, "acc_matrix": [[1.0] * 50] * 50,
             "acc": 1.0, "bwt": 0.0, "fwt": 0.0, "incremental_acc": [1.0] * 50, "val_acc": None,
             "val_acc_matrix": None, "total_seconds": 1.0, "created_at": results.now()}
            for _ in range(int(sys.argv[2]))]
    print("ready", flush=True)
    while True:
        results.write_part(sys.argv[1], "runs", "t1", rows)
""")


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45])
def test_a_writer_killed_mid_write_leaves_a_whole_file_or_none(tmp_path, delay):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "400"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    final = tmp_path / "runs" / "part-t1.parquet"
    deadline = time.monotonic() + 60
    while not final.exists() and time.monotonic() < deadline:  # one whole write done: now rewrites run
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    loaded = results.load(tmp_path)  # raises if a partial file sits under a final name
    assert loaded.runs.num_rows == 400
    leftovers = [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".tmp") for name in leftovers)  # a killed writer's temp file is ignored
    # A rerun, as it starts, removes the parts' leftovers (whatever the kill hit); a compaction's are its own.
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / ".part-t1.parquet.xyz.tmp").write_bytes(b"PAR1 half")
    compaction_s = tmp_path / "runs" / ".compact-000002.parquet.abc.tmp"
    compaction_s.write_bytes(b"PAR1 half")
    assert results.remove_killed_writes(tmp_path) == len(leftovers) + 1
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [compaction_s.name, final.name]
    assert list((tmp_path / "tasks").iterdir()) == []


def test_disk_full_mid_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    config = RunConfig(benchmark="digits").resolve().to_dict()
    row = {**results.common_columns(config, "exp", "t1", "node"), "status": "ok", "error": None, "tasks_done": 1,
           "failure": None, "error_type": None, "infra_retries": 0,
           "acc_matrix": [[50.0]], "acc": 50.0, "bwt": 0.0, "fwt": None, "incremental_acc": [50.0],
           "val_acc": None, "val_acc_matrix": None, "total_seconds": 1.0, "created_at": results.now()}
    results.write_part(tmp_path, "runs", "t1", [row])

    def full_disk(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(OSError, match="No space"):
        results.write_part(tmp_path, "runs", "t1", [{**row, "acc": 99.0}])
    monkeypatch.undo()
    assert results.load(tmp_path).runs.column("acc").to_pylist() == [50.0]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["part-t1.parquet"]


def test_unwritable_or_full_results_paths_fail_up_front(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(results.ResultsError, match="not a directory"):
        results.check_writable(blocker)
    with pytest.raises(results.ResultsError, match="cannot be created"):
        results.check_writable(blocker / "results")
    assert results.check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists(), "checking creates nothing"
    monkeypatch.setattr(results.shutil, "disk_usage", lambda path: SimpleNamespace(free=1024))
    with pytest.raises(results.ResultsError, match="MiB free"):
        results.check_writable(tmp_path)


@needs_read_only_proc
def test_read_only_location_is_refused_even_as_root():
    with pytest.raises(results.ResultsError, match="not writable"):
        results.check_writable("/proc/cldst-results")


def test_cli_refuses_an_unwritable_out_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "synthetic", "--out", str(blocker / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr()
    assert "cannot be created" in err.err and len(err.err.strip().splitlines()) == 1
    assert "task 0" not in err.out


class RunsCode:
    """Unpickling it runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    marker, path = tmp_path / "ran-code", tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": RunsCode(marker)}, path)
    with pytest.raises(checkpoint.CheckpointError, match="not a readable cldst checkpoint"):
        checkpoint.load(path, {})
    assert not marker.exists()


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "x": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(checkpoint.CheckpointError, match="not a readable"):
        checkpoint.load(path, {})
