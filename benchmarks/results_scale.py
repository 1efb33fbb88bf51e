"""How reading results scales with the number of trials: `cldst.results.load` and `python -m analysis.report` on
folders of N trials x 10 tasks, as the sweep leaves them (two part files per trial) and after
`cldst results compact`, against a bare pyarrow scan of the same files.

  python -m benchmarks.results_scale            # 200, 2,000, 10,000 and 50,000 trials (about 30 min on 2 cores)
  python -m benchmarks.results_scale --quick    # 24 and 240 trials, in about a minute

Each folder is written through `cldst.results`' own writer: the paper's 24 configurations (2 inits x 4 growths
x 3 densities) with N / 24 seeds each, clean protocol, a validation split. Goals: the report at
10,000 trials within 3x its time at 200, and `load` within 2x of the bare scan. Then a stray file and a
truncated part are put in each folder: the report must name both and merge neither. Needs no GPU and no Ray.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import torch

from benchmarks import common
from cldst import compaction, results
from cldst.config import RunConfig

TASKS = 10
CONFIGS = list(itertools.product(("ERK", "uniform"), ("random", "unfired", "momentum", "gradient"), (0.1, 0.2, 0.3)))
REPORT_GOAL, LOAD_GOAL = 3.0, 2.0


def write_trials(folder: Path, n: int) -> None:
    """n finished trials of TASKS tasks: a tasks part (one row per task) and a runs part each."""
    rng = np.random.default_rng(0)
    for i in range(n):
        init, growth, density = CONFIGS[i % len(CONFIGS)]
        cfg = RunConfig(benchmark="digits", num_tasks=TASKS, sparse_init=init, growth=growth, density=density,
                        seed=i // len(CONFIGS), val_fraction=0.1).resolve().to_dict()
        common = results.common_columns(cfg, folder.name, f"t{i:06d}", "node-0")
        base = 60.0 + 10.0 * density + 2.0 * (growth == "momentum") + rng.normal(0.0, 1.0)
        rows = []
        for task in range(TASKS):
            acc = [base - 0.5 * (task - j) for j in range(task + 1)]  # (task + 1,): earlier tasks forgotten a bit
            rows.append({"task": task, "acc": acc, "fwt_acc": [], "avg_acc": float(np.mean(acc)), "bwt": 0.0,
                         "val_acc": acc, "val_avg_acc": float(np.mean(acc)), "task_density": density,
                         "capacity_used": min(1.0, density * (task + 1)), "reused_fraction": 0.1,
                         "fired_fraction": 0.3, "train_seconds": 1.0, "images_per_second": 100.0})
        results.write_part(folder, "tasks", common["trial_id"], [results.task_row(common, row) for row in rows])
        results.write_part(folder, "runs", common["trial_id"], [results.run_row(common, rows, "ok", None, 10.0)])


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """The median seconds of `repeats` calls (other work on the machine skews single timings), and the last output."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), out


def bare_scan(folder: Path) -> int:
    """pyarrow's own scan of every file, no checks: the floor `load` is held to."""
    return sum(ds.dataset(folder / kind, format="parquet").to_table().num_rows for kind in results.KINDS)


def report(folder: Path, out: Path) -> str:
    """`python -m analysis.report` as a user runs it (a fresh process: imports included); its terminal output."""
    done = subprocess.run([sys.executable, "-m", "analysis.report", str(folder), "--out", str(out)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"analysis.report failed on {folder}: {done.stderr.strip()[-500:]}")
    return done.stdout + done.stderr


def measure(n: int, scratch: Path, repeats: int) -> dict:
    """One size: written, read as the sweep left it, compacted, read again, then damaged and reported."""
    folder = scratch / f"n{n}" / "exp"
    write_s, _ = timed(lambda: write_trials(folder, n))
    rows = n * (TASKS + 1)
    record: dict = {"trials": n, "files": 2 * n, "write s": write_s}
    for state in ("parts", "compacted"):
        if state == "compacted":
            record["compact s"], _ = timed(lambda: compaction.compact(folder))
        bare_s, bare_rows = timed(lambda: bare_scan(folder), repeats)
        load_s, loaded = timed(lambda: results.load(folder), repeats)
        if (loaded.tasks.num_rows + loaded.runs.num_rows, bare_rows) != (rows, rows):
            raise SystemExit(f"{n} trials ({state}): read {loaded.tasks.num_rows + loaded.runs.num_rows} rows "
                             f"(bare scan {bare_rows}), expected {rows}")
        out = scratch / f"n{n}" / f"report-{state}"
        report_s, _ = timed(lambda out=out: report(folder, out), repeats)
        record.update({f"bare scan s ({state})": bare_s, f"load s ({state})": load_s,
                       f"load / bare ({state})": load_s / bare_s, f"report s ({state})": report_s})
    record["bad files named"] = damaged_report(folder, scratch / f"n{n}" / "report-damaged", n)
    return record


def damaged_report(folder: Path, out: Path, trials: int) -> str:
    """A stray file and a truncated part beside the compacted files: the report names both and leaves both out."""
    stray = folder / "tasks" / "notes.txt"
    stray.write_text("not results")
    victim = next(iter(sorted((folder / "runs").glob("compact-*.parquet"))))
    cut = folder / "runs" / "part-cut.parquet"
    cut.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    text = report(folder, out)
    named = all(f"left out: {path}" in text for path in (stray, cut))
    merged_neither = f"  {trials} trials ({trials} ok," in text  # the cut copy of every trial's runs row: none in
    return "both, neither merged" if named and merged_neither else f"FAILED: named {named}, merged {not merged_neither}"


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="trial counts (default: by mode)")
    parser.add_argument("--repeats", type=int, help="timings per measure, the median kept (default: 3; --quick 1)")
    args: argparse.Namespace = parser.parse_args(argv)
    sizes = args.sizes or ([24, 240] if args.quick else [200, 2000, 10000, 50000])
    records = []
    with tempfile.TemporaryDirectory(prefix="results-scale-") as scratch:
        for n in sizes:
            records.append(measure(n, Path(scratch), args.repeats or (1 if args.quick else 3)))
            print(common.table(records[-1:]), flush=True)  # a cut-off run still tells something
    notes = [f"{TASKS} tasks per trial, {len(CONFIGS)} configurations x N/{len(CONFIGS)} seeds, written by "
             "cldst.results' writer; report s: `python -m analysis.report` in a fresh process (imports included); "
             "each time: the median of --repeats"]
    small, large = records[0], next((r for r in records if r["trials"] >= 10000), records[-1])
    ratio = large["report s (compacted)"] / small["report s (compacted)"]
    notes.append(f"report at {large['trials']:,} trials (compacted) / at {small['trials']:,}: {ratio:.2f}x "
                 f"(goal at most {REPORT_GOAL:g}x); load / bare scan at {large['trials']:,}: "
                 f"{large['load / bare (parts)']:.2f}x as the sweep left it, {large['load / bare (compacted)']:.2f}x "
                 f"compacted (goal at most {LOAD_GOAL:g}x)")
    common.report("benchmarks.results_scale", argv, args, torch.device("cpu"), "Results at scale", [
        common.table(records)], notes)
    return records


if __name__ == "__main__":
    main()
