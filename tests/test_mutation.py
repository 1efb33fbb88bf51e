"""scripts/mutation.py, as docs/mutation.md shows it, on the quickest module: it scores every mutant of
cldst/metrics.py in a scratch copy, leaves the working tree as it was, and the one survivor is the one
docs/mutation.md lists as equivalent."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(600)


def test_mutation_score_of_the_metrics(tmp_path):
    source = (REPO / "cldst" / "metrics.py").read_bytes()
    done = subprocess.run([sys.executable, "scripts/mutation.py", "cldst/metrics.py", "--work", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr
    first, *survivors = done.stdout.split("\nmutant ")
    # killed or suspicious (killed, but slowly: a matter of the machine's load) both count as detected
    assert first.startswith("cldst/metrics.py: 50/51 mutants detected (") and ", 1 survived, " in first, done.stdout
    assert len(survivors) == 1 and "-Rows = Sequence[Sequence[float]]\n+Rows = None" in survivors[0]
    assert (REPO / "cldst" / "metrics.py").read_bytes() == source
    assert (tmp_path / ".mutmut-cache").is_file()
