"""Mutation testing of one module with the fast tests that guard it: mutmut 2 in a scratch copy of the repository
(mutmut 2 writes each mutant into the source file itself, so the working tree is never touched), then the score and
the diff of every mutant that survived.

    python scripts/mutation.py cldst/metrics.py

mutmut 3 would be faster (it forks instead of starting pytest per mutant) but leaves every decorated function
alone, and the engine's are decorated (@torch.no_grad()). docs/mutation.md has each module's score and time.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
STATUSES = ("killed", "timeout", "suspicious", "survived", "skipped", "untested")
ALONE_TIMEOUT = 900  # seconds for the guards on one mutant applied alone (a mutant can loop forever)


def copy_repository(to: Path) -> None:
    """The files git tracks or would track: no .git, virtual environment, data or results."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, to / name)


def environment(work: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(work)}  # the copy's cldst, not an installed one


def mutmut(work: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, env=environment(work),
                          capture_output=True, text=True).stdout


def guards(module: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not cluster",
            *GUARDS[module]]


def run_alone(module: str, work: Path, mutant: str) -> str:
    """The status of one mutant applied alone (`mutmut apply`) against the guards, the source restored after:
    "untested" where mutmut cannot apply it."""
    source = (work / module).read_bytes()
    try:
        mutmut(work, "apply", mutant)
        if (work / module).read_bytes() == source:
            return "untested"
        try:
            done = subprocess.run(guards(module), cwd=work, env=environment(work), capture_output=True,
                                  timeout=ALONE_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "timeout"
        return "survived" if done.returncode == 0 else "killed"
    finally:
        (work / module).write_bytes(source)


def score(module: str, work: Path) -> dict[str, list[str]]:
    """Mutate `module` in `work` and run its guards against each mutant; the mutant ids by status."""
    mutmut(work, "run", "--paths-to-mutate", module, "--runner", shlex.join(guards(module)), "--simple-output",
           "--no-progress")
    ids = {status: mutmut(work, "result-ids", status).split() for status in STATUSES}
    # mutmut 2's run can stop early, its cache having lost a mutant's line ("Attribute Mutant.line is
    # required"): the mutants it left untested are applied one at a time instead
    for mutant in ids["untested"][:]:
        status = run_alone(module, work, mutant)
        if status != "untested":
            ids["untested"].remove(mutant)
            ids[status].append(mutant)
            print(f"mutant {mutant} applied alone: {status}", file=sys.stderr, flush=True)
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", choices=sorted(GUARDS))
    parser.add_argument("--work", type=Path, help="the scratch copy, kept for `mutmut show ID` (default: a "
                                                  "temporary folder, removed after)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cldst-mutation-") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        copy_repository(work)
        started = time.perf_counter()
        ids = score(args.module, work)
        seconds = time.perf_counter() - started
        total = sum(len(found) for found in ids.values())
        detected = len(ids["killed"]) + len(ids["timeout"]) + len(ids["suspicious"])
        counts = ", ".join(f"{len(ids[status])} {status}" for status in STATUSES)
        print(f"{args.module}: {detected}/{total} mutants detected ({counts}) in {seconds:.0f} s")
        for mutant in ids["survived"] + ids["skipped"] + ids["untested"]:
            print(f"\nmutant {mutant}:\n{mutmut(work, 'show', mutant).strip()}")


if __name__ == "__main__":
    main()
