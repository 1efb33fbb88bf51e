"""The docs site's generated reference pages, written by mkdocs-gen-files at build time (mkdocs.yml):
`reference/cli.md` from the command-line parsers themselves, and `reference/schema.md` from `cldst/schema.py`,
so that no flag, default or column is written down by hand and none can go stale.

`python scripts/docs_reference.py` prints both pages, to read them without building the site; tests/test_docs.py
imports it for the commands the CLI page shows.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the sweep scripts import `sweeps`, `cldst` and `analysis` from the checkout

from cldst import cli, config, schema  # noqa: E402

# (command as typed, module whose build_parser() parses it)
SWEEP_SCRIPTS = [("python sweeps/full_grid.py", "sweeps.full_grid"), ("python sweeps/search.py", "sweeps.search"),
                 ("python sweeps/race.py", "sweeps.race"), ("python sweeps/adaptive.py", "sweeps.adaptive")]
# Modules whose parser is built inside main(): their --help is shown as printed.
HELP_ONLY = [("python -m analysis.report", "analysis.report", "parse"),
             ("python -m analysis.calibration", "analysis.calibration", "main")]


def sweep_parser(module: str) -> argparse.ArgumentParser:
    return importlib.import_module(module).build_parser()


def printed_help(module: str, entry: str) -> str:
    """What `python -m <module> --help` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        getattr(importlib.import_module(module), entry)(["--help"])
    return out.getvalue()


def train_default(dest: str) -> str:
    """A `cldst train` flag's default: RunConfig's, or where that is None, who fills it in."""
    known = {f.name: f.default for f in fields(config.RunConfig)}
    if dest not in known:
        return ""
    if known[dest] is not None:
        return f"`{known[dest]}`"
    if dest in config.PROTOCOL_SETTINGS["clean"]:
        return "the protocol's"
    if dest == "class_order_seed":
        return "none (label order)"
    return "the benchmark's"


def cell(text: str) -> str:
    """Text for one table cell: one line, its pipes escaped, and `<results>` shown rather than read as HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def option_rows(parser: argparse.ArgumentParser, default: Callable[[argparse.Action], str]) -> list[str]:
    """One table row per option; a `--no-x` switch joins the row of its `--x`."""
    formatter = parser._get_formatter()
    rows: list[tuple[list[str], str, str, str]] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if isinstance(action, argparse._StoreFalseAction) and rows and rows[-1][0] and action.dest == rows[-1][4]:
            rows[-1][0].extend(action.option_strings)
            continue
        names = list(action.option_strings) or [action.metavar or action.dest]
        takes = "" if action.nargs == 0 else formatter._format_args(action, formatter._get_default_metavar_for_optional(
            action) if action.option_strings else action.dest)
        if action.choices and not action.option_strings:
            takes = " | ".join(action.choices)
        rows.append([names, takes, default(action), formatter._expand_help(action) if action.help else "",
                     action.dest])
    lines = ["| option | value | default | meaning |", "|---|---|---|---|"]
    for names, takes, fallback, meaning, _dest in rows:
        lines.append(f"| {', '.join(f'`{n}`' for n in names)} | {cell(takes)} | {cell(fallback)} | {cell(meaning)} |")
    return lines


def argparse_default(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "off" if action.default is False else ""
    if action.default is None or action.default == argparse.SUPPRESS or not action.option_strings:
        return ""
    return f"`{action.default}`"


def benchmark_defaults() -> list[str]:
    keys = list(next(iter(config.BENCHMARK_DEFAULTS.values())))
    lines = ["| benchmark | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, values in config.BENCHMARK_DEFAULTS.items():
        lines.append(f"| `{name}` | " + " | ".join(f"{values[k]:g}" if isinstance(values[k], float) else str(values[k])
                                                     for k in keys) + " |")
    return lines


def cli_reference() -> str:
    train_parser = cli.build_parser()._subparsers._group_actions[0].choices
    out = ["# Command line", "",
           "Generated from the parsers themselves (`build_parser()` of `cldst` and of each sweep script) when the",
           "site is built: every option below is one the code accepts today. `--help` on any command prints the",
           "same options.", "",
           "## cldst train", "", "One task-incremental DST experiment ([One run](../guides/train.md)).", "",
           "Flags left out take the benchmark's defaults (table below) or the protocol's; every per-task flag",
           "(`" + "`, `".join(cli.flag_for(n) for n in config.PER_TASK_FIELDS) + "`) takes one value or a comma list,",
           "one value per task.", "",
           *option_rows(train_parser["train"], lambda a: train_default(a.dest) or argparse_default(a)), "",
           "### The benchmark's defaults", "", "`config.BENCHMARK_DEFAULTS`, for the flags above whose default is",
           "the benchmark's:", "", *benchmark_defaults(), "",
           "### The protocol's settings", "", "| protocol | " + " | ".join(
               f"`{k}`" for k in config.PROTOCOL_SETTINGS["clean"]) + " |", "|---|---|---|",
           *(f"| `{p}` | " + " | ".join(f"`{v}`" for v in s.values()) + " |" for p, s in
             config.PROTOCOL_SETTINGS.items()), "",
           "Under `paper`, giving `--eval-head` or `--precision` another value than the protocol's is refused.", "",
           "### Other spellings of values", "", "| setting | spelling | means |", "|---|---|---|",
           *(f"| `{field}` | `{alias}` | `{canonical}` |" for field, names in config.ALIASES.items()
             for alias, canonical in names.items()), "",
           "## cldst data", "", *option_rows(train_parser["data"], argparse_default), "",
           "## cldst results", "", *option_rows(train_parser["results"], argparse_default), ""]
    for command, module in SWEEP_SCRIPTS:
        parser = sweep_parser(module)
        out += [f"## {command}", "", "```text", (parser.description or "").strip(), "```", "",
                *option_rows(parser, argparse_default), ""]
    for command, module, entry in HELP_ONLY:
        out += [f"## {command}", "", "```text", printed_help(module, entry).strip(), "```", ""]
    return "\n".join(out)


def schema_reference() -> str:
    required = {kind: set(names) for kind, names in schema.REQUIRED.items()}
    out = ["# Results schema", "",
           f"Generated from `cldst/schema.py` when the site is built. Schema version {schema.SCHEMA_VERSION}.",
           "What each column means, and what each version added: [Design, the Parquet contract]"
           "(../design.md#the-parquet-contract). The folder layout: [Results layout](results.md).", ""]
    for kind, table in schema.SCHEMAS.items():
        out += [f"## {kind}", "", f"Key: {', '.join(f'`{k}`' for k in schema.KEYS[kind])}. "
                "Required: in every file since version 1.", "", "| column | Arrow type | required |", "|---|---|---|"]
        out += [f"| `{f.name}` | `{f.type}` | {'yes' if f.name in required[kind] else ''} |" for f in table]
        out.append("")
    return "\n".join(out)


def write_pages() -> None:
    import mkdocs_gen_files
    for path, text in (("reference/cli.md", cli_reference()), ("reference/schema.md", schema_reference())):
        with mkdocs_gen_files.open(path, "w") as page:
            page.write(text)


if __name__ == "__main__":
    print(cli_reference())
    print(schema_reference())
elif __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path
    write_pages()
