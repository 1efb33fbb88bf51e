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


def copy_repository(to: Path) -> None:
    """The files git tracks or would track: no .git, virtual environment, data or results."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, to / name)


def mutmut(work: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(work)}  # the copy's cldst, not an installed one
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, env=env, capture_output=True,
                          text=True).stdout


def score(module: str, work: Path) -> dict[str, list[str]]:
    """Mutate `module` in `work` and run its guards against each mutant; the mutant ids by status."""
    runner = shlex.join([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not cluster",
                         *GUARDS[module]])
    mutmut(work, "run", "--paths-to-mutate", module, "--runner", runner, "--simple-output", "--no-progress")
    return {status: mutmut(work, "result-ids", status).split() for status in STATUSES}


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
