"""A location no one may write to, for the tests of an unwritable path: /proc on Linux, where even root cannot
create a file. Elsewhere (no /proc, or one that takes new entries) those tests skip instead of failing."""

from pathlib import Path

import pytest

READ_ONLY = Path("/proc")


def _takes_no_new_entry(folder: Path) -> bool:
    probe = folder / "cldst-write-probe"
    try:
        probe.mkdir()
    except OSError:
        return True
    probe.rmdir()
    return False


needs_read_only_proc = pytest.mark.skipif(not (READ_ONLY.is_dir() and _takes_no_new_entry(READ_ONLY)),
                                          reason="needs a /proc that takes no new entry (Linux)")


def cases_of(table: dict[str, tuple[str, str]]) -> list:
    """A table's case names for parametrize, those whose command line writes under /proc marked to skip
    where /proc is writable or absent."""
    return [pytest.param(name, marks=needs_read_only_proc) if f"{READ_ONLY}/" in argv else name
            for name, (argv, _named) in table.items()]
