"""examples/explore_results.py, run cell by cell as an editor runs `# %%` cells, on Parquet results the test writes
(tests/analysis_fixture.py: known ACC per seed, plus a failed, a stopped and a running trial)."""

import re
import sys
from pathlib import Path

import pytest
from analysis_fixture import build_grid

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "explore_results.py"

pytestmark = pytest.mark.timeout(60)


def run_cells(path: Path, argv: list[str], monkeypatch) -> dict:
    """Execute the script's `# %%` cells in order in one namespace, as a notebook kernel would; returns it."""
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    cells = re.split(r"\n(?=# %%)", path.read_text())
    assert len(cells) >= 4  # the docstring, then the cells
    namespace: dict = {"__name__": "__main__"}
    for cell in cells:
        exec(compile(cell, str(path), "exec"), namespace)
    return namespace


def test_the_example_loads_tabulates_and_draws(tmp_path, monkeypatch, capsys):
    results = build_grid(tmp_path)
    out = tmp_path / "explore"
    cells = run_cells(EXAMPLE, [str(results), str(out)], monkeypatch)
    printed = capsys.readouterr().out
    assert printed.startswith("25 trials: 22 ok, 1 error, 1 stopped, 1 running\n")
    table = cells["table"]
    assert len(table) == 10  # the fixture's configurations
    erk_random = table.loc[("5x2", 0.1, "ERK", "random")]  # seeds 80, 82, 84; its failed trial (ACC 5) left out
    assert (erk_random["acc_mean"], erk_random["acc_std"], erk_random["bwt_mean"], erk_random["seeds"]) == \
        (82.0, 2.0, -1.0, 3)
    assert table.loc[("5x2", 0.1, "uniform", "momentum"), "acc_mean"] == 75.0  # its stopped trial (ACC 10) left out
    assert (out / "acc_by_config.csv").read_text().count("\n") == 1 + 10
    figure = out / "avg_acc_over_tasks.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    assert len(cells["fig"].axes[0].lines) == 10
