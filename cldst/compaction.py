"""Compaction: finished trials' part files merged into one file per kind, so that reading a folder of many
thousands of trials opens a few files instead of two per trial.

`compact(experiment_dir)` writes `<kind>/compact-<generation>.parquet`, the rows of every earlier compacted
file and of every finished trial's parts (a trial is finished once its runs part exists), each key once (the
reader's rule, schema.py). Then it removes what it merged. It is

- atomic: the new file appears whole under its name (rename); until the merged files are gone a reader finds a
  key in two files and keeps the newest, which holds the same row. A reader that listed a file this removes
  reads again (reader.py).
- idempotent: with no finished trial's parts left and one compacted file per kind, it changes nothing.
- safe beside a running sweep: unfinished trials keep their parts; a part rewritten while being merged (a
  resumed trial) is not removed, and as a part it outranks the compacted copy. A resumed trial that rewrites
  rows after compaction writes a new part, whose rows replace the compacted ones key by key.
Two compactions of one folder never run at once (a lock file); one removes what a stopped one half wrote.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cldst.reader import PART_RANK, listing, resolve, scan
from cldst.results import remove_killed_writes, write_table
from cldst.schema import KEYS, KINDS, PART_PATTERN, ResultsError

LEFTOVER = ".compacting"  # suffix of a part a compaction moved aside and had not yet removed when it stopped


@dataclass
class Compacted:
    """What one compaction did to one experiment folder."""

    experiment_dir: Path
    generation: int | None  # the compacted files' generation; None: nothing to do
    finished_trials: int = 0  # trials whose parts were merged
    parts_removed: int = 0
    parts_kept: list[str] = field(default_factory=list)  # merged, but rewritten meanwhile: the part stands
    unfinished_trials: int = 0  # trials without a runs part: their parts stay
    skipped: list[tuple[str, str]] = field(default_factory=list)  # unreadable files, left as they are

    def summary(self) -> str:
        where = f"{self.experiment_dir}:"
        if self.generation is None:
            return f"{where} already compact ({self.unfinished_trials} unfinished trial(s) keep their parts)"
        return (f"{where} {self.finished_trials} finished trial(s) merged into compact-{self.generation:06d}.parquet "
                f"({self.parts_removed} part files removed); {self.unfinished_trials} unfinished trial(s) keep their "
                f"parts" + (f"; {len(self.parts_kept)} part(s) rewritten meanwhile stand" if self.parts_kept else ""))


@contextmanager
def _lock(experiment_dir: Path) -> Iterator[None]:
    with open(experiment_dir / ".compact.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultsError(f"{experiment_dir}: another compaction of this folder is running") from None
        yield


def _restore_leftovers(folder: Path) -> None:
    """Parts that a stopped compaction had moved aside: back under their names, unless a newer part is there."""
    for moved in folder.glob(f".part-*.parquet{LEFTOVER}"):
        final = folder / moved.name[1:-len(LEFTOVER)]
        try:
            os.link(moved, final)
        except FileExistsError:
            pass
        moved.unlink()


def _remove_if_unchanged(path: Path, read: os.stat_result) -> bool:
    """Remove a merged part unless it was rewritten after it was read. Moving it aside first makes the check and
    the removal one step: a rewrite that lands meanwhile gets its own new file under the name."""
    moved = path.with_name(f".{path.name}{LEFTOVER}")
    os.rename(path, moved)
    now = os.stat(moved)
    if (now.st_ino, now.st_mtime_ns, now.st_size) != (read.st_ino, read.st_mtime_ns, read.st_size):
        try:
            os.link(moved, path)  # it was rewritten: it stands (unless a yet newer one is there)
        except FileExistsError:
            pass
        moved.unlink()
        return False
    moved.unlink()
    return True


def compact(experiment_dir: str | os.PathLike) -> Compacted:
    """Merge the finished trials' parts of one experiment folder (module docstring)."""
    experiment_dir = Path(experiment_dir)
    if not all((experiment_dir / kind).is_dir() for kind in KINDS):
        raise ResultsError(f"{experiment_dir}: not an experiment folder (expected tasks/ and runs/ in it)")
    with _lock(experiment_dir):
        remove_killed_writes(experiment_dir, "compact-*.parquet")  # a stopped compaction's half-written file
        for kind in KINDS:
            _restore_leftovers(experiment_dir / kind)
        done = Compacted(experiment_dir, None)

        def bad(path: Path, err: ResultsError) -> None:
            done.skipped.append((str(path), str(err)))

        listings = {kind: listing(experiment_dir / kind, bad) for kind in KINDS}
        finished = {PART_PATTERN.match(path.name)["trial_id"] for path in listings["runs"][0][1]}
        started = {PART_PATTERN.match(path.name)["trial_id"] for kind in KINDS for path in listings[kind][0][1]}
        done.unfinished_trials = len(started - finished)
        merging = {kind: [path for path in listings[kind][0][1] if PART_PATTERN.match(path.name)["trial_id"]
                          in finished] for kind in KINDS}
        compacted = {kind: [(rank, paths[0]) for rank, paths in listings[kind][1:]] for kind in KINDS}
        if not finished and all(len(files) <= 1 for files in compacted.values()):
            return done
        generation = 1 + max((rank for files in compacted.values() for rank, _path in files), default=0)
        for kind in KINDS:
            read_stats = {path: os.stat(path) for path in merging[kind]}  # before reading: a later rewrite shows
            ranked = [(PART_RANK, table) for table in scan(merging[kind], kind, bad)]
            ranked += [(rank, table) for rank, path in compacted[kind] for table in scan([path], kind, bad)]
            table = resolve(ranked, kind).sort_by([(key, "ascending") for key in KEYS[kind]])
            write_table(table, experiment_dir / kind / f"compact-{generation:06d}.parquet")
            unread = {path for path, _reason in done.skipped}  # left where they are, merged into nothing
            for _rank, path in compacted[kind]:
                if str(path) not in unread:
                    path.unlink()
            for path in merging[kind]:
                if str(path) in unread:
                    continue
                if _remove_if_unchanged(path, read_stats[path]):
                    done.parts_removed += 1
                else:
                    done.parts_kept.append(str(path))
        done.generation = generation
        done.finished_trials = len(finished)
        return done

