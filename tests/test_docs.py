"""The documentation: the site builds with `mkdocs build --strict` (a broken link, a bad anchor or a page left out
of the navigation fails it), README stays a front page whose links resolve, no page speaks of anything but the
project, and every command the docs show that starts a train, a sweep or a report goes through its parser, a
sweep's with --dry-run: a renamed or removed flag fails here."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from cldst import cli
from scripts import docs_reference

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]
README_MAX_LINES = 150

# bash blocks, and text blocks: the generated CLI page shows each sweep script's example commands in one
FENCE = re.compile(r"^```(?:bash|sh|text)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
# The programs whose commands are checked, and how: the sweep scripts run with --dry-run, `cldst` and the report
# go through their parsers, and the other `python -m` tools must know every flag the command gives them.
PROGRAM = re.compile(r"(?:^|\s)(?:\S*/)?(?:python3?\s+(?P<script>sweeps/\w+\.py)|(?:python3?\s+-m\s+)?(?P<cldst>cldst)"
                     r"(?=\s+(?:train|data|results)(?:\s|$))|python3?\s+-m\s+(?P<module>analysis\.\w+|benchmarks\.\w+))"
                     r"(?=\s|$)")


def shell_commands(text: str) -> list[str]:
    """The commands of a page's bash and text blocks (continuations joined, comments dropped, `a && b` split, usage
    lines left out) and its inline code spans; a span holding `...` or `[` describes a syntax, not a command."""
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*", "", line).strip()
            if not line.startswith("usage:"):
                commands += [part.strip() for part in line.split("&&") if part.strip()]
    commands += [span for span in INLINE.findall(text) if "..." not in span and "[" not in span and names_more(span)]
    return commands


def names_more(span: str) -> bool:
    """False for a span that only names a program or subcommand (`cldst data`, `sweeps/race.py`): not a command."""
    match = PROGRAM.search(span)
    return match is None or len(span[match.end():].split()) > (1 if match["cldst"] else 0)


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every documented command of a checked program, the generated CLI page's included."""
    found = []
    pages = [(page.relative_to(REPO).as_posix(), page.read_text()) for page in PAGES]
    for where, text in [*pages, ("reference/cli.md (generated)", docs_reference.cli_reference())]:
        found += [(where, command) for command in shell_commands(text) if PROGRAM.search(command)]
    return found


def argv_of(command: str) -> tuple[re.Match, list[str]]:
    """The program's match and its arguments, with the docs' placeholders made concrete."""
    match = PROGRAM.search(command)
    rest = re.sub(r"<[^>]+>", "placeholder", command[match.end():])
    rest = re.sub(r"--seed S\b", "--seed 0", rest)
    return match, shlex.split(rest)


def printed_help(module: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    return out.getvalue()


def run_documented(command: str) -> None:
    match, argv = argv_of(command)
    if match["script"]:
        module = importlib.import_module("sweeps." + Path(match["script"]).stem)
        if "--from" in argv:  # races a finished search's folder, which only a real search writes: parse it
            module.build_parser().parse_args(argv)
        else:
            assert module.main([*argv, "--dry-run"]) == 0
    elif match["cldst"]:
        args = cli.build_parser().parse_args(argv)
        if args.command == "train":
            cli.config_from_args(args)  # the resolved, validated configuration: what a run starts from
    elif match["module"] == "analysis.report":
        importlib.import_module("analysis.report").parse(argv)
    else:
        known = printed_help(match["module"])
        unknown = [flag for flag in argv if flag.startswith("--") and flag.split("=")[0] not in known]
        assert not unknown, f"python -m {match['module']} --help lists no {unknown}"


COMMANDS = documented_commands()


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_every_documented_command_parses(where: str, command: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a dry run writes nothing; if one did, it would land here
    (tmp_path / "examples").symlink_to(REPO / "examples")  # the docs' paths are the checkout's
    run_documented(command)


def test_the_docs_show_a_train_a_sweep_of_each_script_and_a_report() -> None:
    shown = " ".join(command for _where, command in COMMANDS)
    for program in ("cldst train", "sweeps/full_grid.py", "sweeps/search.py", "sweeps/race.py", "sweeps/adaptive.py",
                    "analysis.report"):
        assert program in shown


def test_a_renamed_flag_fails_its_command() -> None:
    with pytest.raises(SystemExit):
        run_documented("python sweeps/search.py --preset quick --density-span 0.02 0.3")


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


def test_readme_is_a_front_page_whose_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "## Deliberate differences" in text
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        assert (REPO / path).exists(), target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (REPO / path).read_text(), re.M)
            assert anchor in {slugify(heading, "-") for heading in headings}, target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_pages_speak_of_the_project_only(page: Path) -> None:
    text = page.read_text()
    for pattern in (r"\bissue \d+", r"\bsessions?\b", r"\bGPU loan", r"(?-i:\bDESIGN\.md)", r"\.\./shared", r"/work/"):
        assert not re.search(pattern, text, re.I), f"{page.name}: {pattern}"
