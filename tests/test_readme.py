"""Every sweep command the README shows in a code block runs here, as a dry run (`--dry-run` added where it is not
given): the options it shows exist, parse and resolve to trials. A command whose argument is a placeholder
(`results/<search>`) is left out: there is nothing to run it on."""

import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeps import adaptive, full_grid, race, search  # noqa: E402

SCRIPTS = {"full_grid.py": full_grid, "search.py": search, "adaptive.py": adaptive, "race.py": race}

pytestmark = pytest.mark.timeout(60)


def readme_commands() -> list[str]:
    """The `python sweeps/...` lines of the README's bash blocks, continuations joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines if "<" not in line]
    return [" ".join(words[1:]) for words in commands
            if len(words) > 1 and words[0] == "python" and words[1].startswith("sweeps/")]


def test_the_readme_shows_the_sweep_options():
    shown = " ".join(readme_commands())
    for option in ("--set protocol=paper", "--grid prune=magnitude,Taylor_FO", "--config examples/sweeps/",
                   "sweeps/search.py --preset quick --grid"):
        assert option in shown


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_runs_as_a_dry_run(command, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)  # the README's paths (examples/sweeps/...) are the checkout's
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    script, *argv = shlex.split(command)
    main = SCRIPTS[Path(script).name].main
    assert main([*argv, *([] if "--dry-run" in argv else ["--dry-run"])]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out
