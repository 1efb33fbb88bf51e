"""Mutation testing of one module with the fast tests that guard it: mutmut 2 makes the mutants, and each one is
written into a scratch copy of the repository, where the guards run against it (the working tree is never touched).
Prints the score and the diff of every mutant that survived.

    python scripts/mutation.py cldst/metrics.py

The mutants run `--jobs` at a time, one scratch copy each, every guard run with one thread. mutmut's own runner is
not used: it runs one mutant at a time, and its worker process has hung for good in long runs. mutmut 3 would fork
instead of starting pytest per mutant, but it leaves every decorated function alone, and the engine's are
decorated (@torch.no_grad()). docs/mutation.md has each module's score and time.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mutmut

REPO = Path(__file__).resolve().parents[1]
# module -> the pytest arguments of the fast tests that guard it (no Ray sweep, no 11M-weight net)
GUARDS = {
    "analysis/stats.py": ["tests/test_stats.py", "tests/test_racing.py"],
    "analysis/findings.py": ["tests/test_analysis.py", "tests/test_crossed_panels.py"],
    "cldst/masking.py": ["tests/test_masking.py", "tests/test_continual.py", "-k",
                         "not every_criterion and not learns_well"],
    "cldst/continual.py": ["tests/test_continual.py", "tests/test_protocol.py", "-k", "not file_order"],
    "cldst/metrics.py": ["tests/test_metrics.py"],
    "cldst/schema.py": ["tests/test_results.py", "tests/test_compaction.py"],
    "cldst/reader.py": ["tests/test_results.py", "tests/test_compaction.py"],
    "cldst/splits.py": ["tests/test_splits.py"],
    "cldst/checkpoint.py": ["tests/test_checkpoint.py", "tests/test_reliability_core.py", "tests/test_continual.py",
                            "-k", "checkpoint or resume"],
}
DETECTED = ("killed", "timeout")
STATUSES = (*DETECTED, "survived")
RESULTS = "mutants.jsonl"  # in --work: one line per mutant run, so that a later run there skips the detected ones
# a mutant's guards may take this many times as long as on the unmutated module, plus the floor: some loop forever
TIMEOUT_FACTOR, TIMEOUT_FLOOR = 10, 60


@dataclass(frozen=True)
class Mutant:
    number: int  # from 1, in the module's order, as mutmut numbers them
    source: str  # the whole module with this one mutation
    diff: str

    @property
    def key(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


def mutants(module: str) -> list[Mutant]:
    """Every mutant mutmut makes of `module` (as it is in the working tree)."""
    source = (REPO / module).read_text()
    found = []
    for number, mutation in enumerate(mutmut.list_mutations(mutmut.Context(source=source, filename=module)), 1):
        mutated, _ = mutmut.mutate(mutmut.Context(source=source, filename=module, mutation_id=mutation))
        diff = difflib.unified_diff(source.splitlines(True), mutated.splitlines(True), module, module, n=0)
        found.append(Mutant(number, mutated, "".join(diff)))
    return found


def copy_repository(to: Path) -> None:
    """The files git tracks or would track: no .git, virtual environment, data or results."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, to / name)


def guards(module: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not cluster",
            *GUARDS[module]]


def run_guards(module: str, copy: Path, source: str, timeout: float | None = None) -> str:
    """The guards' verdict on `source` written into `copy` as `module`; the module restored after. On a timeout
    the guards' whole process group is killed (a test's own subprocesses among them)."""
    path = copy / module
    original = path.read_text()
    path.write_text(source)
    try:
        with subprocess.Popen(guards(module), cwd=copy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"},
                              start_new_session=True) as process:
            try:
                returncode = process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                return "timeout"
    finally:
        path.write_text(original)
    return "survived" if returncode == 0 else "killed"


def score(module: str, work: Path, jobs: int) -> dict[str, list[Mutant]]:
    """Every mutant of `module` against its guards, `jobs` scratch copies in `work`; the mutants by status. Those
    detected in an earlier run in `work` (the same mutated source) are not run again; survivors are."""
    copies: queue.Queue[Path] = queue.Queue()
    for job in range(jobs):
        copy_repository(work / f"copy-{job}")
        copies.put(work / f"copy-{job}")
    started = time.perf_counter()
    if run_guards(module, work / "copy-0", (REPO / module).read_text()) != "survived":
        raise SystemExit(f"the guards of {module} fail on the unmutated module: {' '.join(guards(module))}")
    timeout = TIMEOUT_FACTOR * (time.perf_counter() - started) + TIMEOUT_FLOOR

    results = work / RESULTS
    earlier = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    known = {row["key"]: row["status"] for row in earlier if row["module"] == module and row["status"] in DETECTED}
    every = mutants(module)
    to_run = [mutant for mutant in every if mutant.key not in known]
    print(f"{module}: {len(every)} mutants, {len(every) - len(to_run)} detected in an earlier run, {len(to_run)} "
          f"to run, {jobs} at a time (timeout {timeout:.0f} s each)", file=sys.stderr, flush=True)

    def run(mutant: Mutant) -> str:
        copy = copies.get()
        try:
            status = run_guards(module, copy, mutant.source, timeout)
        finally:
            copies.put(copy)
        with results.open("a") as log:
            log.write(json.dumps({"module": module, "number": mutant.number, "key": mutant.key, "status": status})
                      + "\n")
        print(f"mutant {mutant.number}: {status}", file=sys.stderr, flush=True)
        return status

    pool = ThreadPoolExecutor(jobs)
    try:
        ran = dict(zip(to_run, pool.map(run, to_run), strict=True))
    finally:  # on an interrupt, the mutants not started are dropped and those running end (their copies restored)
        pool.shutdown(cancel_futures=True)
    by_status: dict[str, list[Mutant]] = {status: [] for status in STATUSES}
    for mutant in every:
        by_status[known.get(mutant.key) or ran[mutant]].append(mutant)
    return by_status


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", choices=sorted(GUARDS))
    parser.add_argument("--work", type=Path, help=f"the scratch copies and {RESULTS}, kept so that a later run "
                                                  "goes on from this one (default: a temporary folder, removed after)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="mutants run at once (default: one per core)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, not {args.jobs}")
    with tempfile.TemporaryDirectory(prefix="cldst-mutation-") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        by_status = score(args.module, work, args.jobs)
        seconds = time.perf_counter() - started
    total = sum(len(found) for found in by_status.values())
    detected = sum(len(by_status[status]) for status in DETECTED)
    counts = ", ".join(f"{len(by_status[status])} {status}" for status in STATUSES)
    print(f"{args.module}: {detected}/{total} mutants detected ({counts}) in {seconds:.0f} s")
    for mutant in by_status["survived"]:
        print(f"\nmutant {mutant.number}:\n{mutant.diff.strip()}")


if __name__ == "__main__":
    main()
