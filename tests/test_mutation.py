"""scripts/mutation.py, as docs/mutation.md shows it, on the quickest module: it scores every mutant of
cldst/splits.py in a scratch copy (45 s on 2 loaded cores), kills them all, and leaves the working tree as it
was."""

import subprocess
import sys
from pathlib import Path

import pytest

from scripts import mutation

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(600)


def test_mutation_score_of_the_splits(tmp_path):
    source = (REPO / "cldst" / "splits.py").read_bytes()
    done = subprocess.run([sys.executable, "scripts/mutation.py", "cldst/splits.py", "--work", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr
    # killed or suspicious (killed, but slowly: a matter of the machine's load) both count as detected
    assert done.stdout.startswith("cldst/splits.py: 36/36 mutants detected ("), done.stdout
    assert "\nmutant " not in done.stdout  # no survivor listed
    assert (REPO / "cldst" / "splits.py").read_bytes() == source
    assert (tmp_path / ".mutmut-cache").is_file()
    # the path for mutants that mutmut's run leaves untested: each applied alone, the source restored after
    assert mutation.run_alone("cldst/splits.py", tmp_path, "1") == "killed"
    assert mutation.run_alone("cldst/splits.py", tmp_path, "999999") == "untested"  # no such mutant
    assert (tmp_path / "cldst" / "splits.py").read_bytes() == source
