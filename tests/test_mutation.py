"""scripts/mutation.py, as docs/mutation.md shows it, on the quickest module: it scores every mutant of
cldst/splits.py in scratch copies (about 15 s on 2 idle cores), kills them all, and leaves the working tree as it
was; a later run in the same folder skips what it detected. The other tests give it guards that cannot fail, or
that never end, so that survivors and timeouts show."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts import mutation

REPO = Path(__file__).resolve().parents[1]
SPLITS = "cldst/splits.py"

pytestmark = pytest.mark.timeout(600)


def guard_with(monkeypatch, code: str) -> None:
    """The guards of every module replaced by `code`, run by Python in the scratch copy."""
    monkeypatch.setattr(mutation, "guards", lambda module: [sys.executable, "-c", code])


def test_mutation_score_of_the_splits_and_a_rerun_that_goes_on_from_it(tmp_path, monkeypatch, capsys):
    source = (REPO / SPLITS).read_bytes()
    done = subprocess.run([sys.executable, "scripts/mutation.py", SPLITS, "--work", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{SPLITS}: 36/36 mutants detected (36 killed, 0 timeout, 0 survived)"), done.stdout
    assert "\nmutant " not in done.stdout  # no survivor listed
    assert (REPO / SPLITS).read_bytes() == source
    copies = sorted(tmp_path.glob("copy-*"))  # one per core
    assert copies and all((copy / SPLITS).read_bytes() == source for copy in copies)  # restored after the last mutant
    rows = [json.loads(line) for line in (tmp_path / mutation.RESULTS).read_text().splitlines()]
    assert sorted(row["number"] for row in rows) == list(range(1, 37))

    guard_with(monkeypatch, "pass")  # would let every mutant survive, were any run again
    mutation.main([SPLITS, "--work", str(tmp_path), "--jobs", "1"])
    out, err = capsys.readouterr()
    assert out.startswith(f"{SPLITS}: 36/36 mutants detected"), out
    assert "36 detected in an earlier run, 0 to run" in err


def test_survivors_are_listed_with_their_diffs_and_run_again_later(tmp_path, monkeypatch, capsys):
    guard_with(monkeypatch, "pass")
    mutation.main([SPLITS, "--work", str(tmp_path)])
    out, err = capsys.readouterr()
    assert out.startswith(f"{SPLITS}: 0/36 mutants detected (0 killed, 0 timeout, 36 survived)"), out
    first = mutation.mutants(SPLITS)[0]
    assert f"\nmutant 1:\n{first.diff.strip()}\n" in out
    header, changed = first.diff.splitlines()[:2], first.diff.splitlines()[3:]
    assert header == [f"--- {SPLITS}", f"+++ {SPLITS}"]
    assert [line[0] for line in changed] == ["-", "+"]  # one line changed

    mutation.main([SPLITS, "--work", str(tmp_path)])
    assert "0 detected in an earlier run, 36 to run" in capsys.readouterr().err


def test_a_mutant_whose_guards_never_end_times_out_and_is_stopped(tmp_path, monkeypatch, capsys):
    # the unmutated module passes at once; a mutated one would sleep for a minute
    guard_with(monkeypatch, f"import filecmp, time; filecmp.cmp({SPLITS!r}, {str(REPO / SPLITS)!r}, shallow=False) "
                            "or time.sleep(60)")
    monkeypatch.setattr(mutation, "TIMEOUT_FLOOR", 1)
    every = mutation.mutants(SPLITS)
    monkeypatch.setattr(mutation, "mutants", lambda module: every[:2])
    started = time.perf_counter()
    mutation.main([SPLITS, "--work", str(tmp_path), "--jobs", "2"])
    assert time.perf_counter() - started < 30
    assert capsys.readouterr().out.startswith(f"{SPLITS}: 2/2 mutants detected (0 killed, 2 timeout, 0 survived)")
    assert (tmp_path / "copy-0" / SPLITS).read_bytes() == (REPO / SPLITS).read_bytes()


def test_guards_that_fail_on_the_unmutated_module_stop_the_run(tmp_path, monkeypatch):
    guard_with(monkeypatch, "raise SystemExit(1)")
    with pytest.raises(SystemExit, match=f"the guards of {SPLITS} fail on the unmutated module"):
        mutation.main([SPLITS, "--work", str(tmp_path)])
    assert not (tmp_path / mutation.RESULTS).exists()


def test_jobs_below_one_are_refused(capsys):
    with pytest.raises(SystemExit) as refused:
        mutation.main([SPLITS, "--jobs", "0"])
    assert refused.value.code == 2
    assert "--jobs must be 1 or more, not 0" in capsys.readouterr().err
