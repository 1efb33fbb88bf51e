"""What a running sweep shows: one live view of its trials, tasks, time and best ACC, and a log of every task.

`SweepProgress` is a Tune callback on the driver. On a terminal it draws one live view with rich
(it redraws in place; anything else printed appears above it); when stdout is not a terminal
(CI, nohup, a file) it prints one plain line every `every` seconds and a last one at the end.
Both show the same numbers:
- trials ok / running / pending / error / stopped (pending counts trials Tune has not made yet), and paused
  where any is (a PBT member waiting for the population at a task boundary, a trial a scheduler paused);
- tasks learned out of the total (a stopped or failed trial's unlearned tasks leave the total);
- elapsed time, and the ETA from the tasks learned by this process (a resumed sweep's earlier
  tasks do not make it look faster);
- the best final ACC of the trials that learned every task: validation `val_avg_acc` where trials
  report it, else test `avg_acc`, labelled as such.

The per-task lines (`cldst.tune.ParquetCallback`) go to the `cldst.tune` logger, which
`task_log` sends to `<results>/sweep.log` and, with --verbose, to stdout.

Ray's own driver-side lines: sweeps/ray_logs.py.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from ray import tune

from cldst.config import RunConfig

STATES = ("ok", "running", "pending", "paused", "error", "stopped")
TASK_LOGGER = "cldst.tune"  # ParquetCallback's per-task lines


@dataclass(frozen=True)
class Snapshot:
    """The sweep at one moment (made by the driver thread, drawn by rich's refresh thread)."""

    trials: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    tasks_done: int = 0
    tasks_total: int = 0
    learned_here: int = 0  # tasks learned since this process started: the rate behind the ETA
    best: tuple[float, str, str] | None = None  # (ACC, "val" or "test", trial id)


def count(trials: list, expected_trials: int, expected_tasks: int | None, baseline: dict[str, int],
          num_tasks: dict[str, int]) -> Snapshot:
    """A Snapshot of Tune's trials. `baseline` (trial id -> tasks done when first seen) and `num_tasks`
    (trial id -> its split) are filled in as trials appear."""
    states = dict.fromkeys(STATES, 0)
    done = learned = dropped = 0
    finished = []
    for trial in trials:
        result = trial.last_result or {}
        tasks = result.get("tasks_done", 0)
        if trial.trial_id not in num_tasks:
            num_tasks[trial.trial_id] = result.get("num_tasks") or RunConfig.from_dict(trial.config).resolve().num_tasks
        total = num_tasks[trial.trial_id]
        state = {"RUNNING": "running", "PAUSED": "paused", "ERROR": "error"}.get(trial.status, "pending")
        if trial.status == "TERMINATED":
            state = "ok" if tasks == total else "stopped"
        states[state] += 1
        if state in ("error", "stopped"):
            dropped += total - tasks
        if state == "ok":
            finished.append((trial.trial_id, result))
        done += tasks
        learned += tasks - baseline.setdefault(trial.trial_id, tasks)
    states["pending"] += max(0, expected_trials - len(trials))
    if expected_tasks is None:  # not given: trials not made yet learn as many tasks as the average made one
        known = sum(num_tasks[t.trial_id] for t in trials)
        expected_tasks = known + round(known / len(trials) * max(0, expected_trials - len(trials))) if trials else 0
    return Snapshot(states, done, max(done, expected_tasks - dropped), learned, best_acc(finished))


def best_acc(finished: list[tuple[str, dict]]) -> tuple[float, str, str] | None:
    """The highest final ACC among trials that learned every task: validation if they report it, else test."""
    key, label = ("val_avg_acc", "val") if any(r.get("val_avg_acc") is not None for _, r in finished) \
        else ("avg_acc", "test")
    scored = [(r[key], label, trial_id) for trial_id, r in finished if r.get(key) is not None]
    return max(scored) if scored else None


def clock(seconds: float | None) -> str:
    return "--:--:--" if seconds is None or not math.isfinite(seconds) else str(timedelta(seconds=int(seconds)))


@dataclass(frozen=True)
class View:
    """How one Snapshot reads, `elapsed` seconds into this process's run."""

    name: str
    snap: Snapshot
    elapsed: float

    @property
    def eta(self) -> float | None:
        left = self.snap.tasks_total - self.snap.tasks_done
        if left == 0:
            return 0.0
        return left * self.elapsed / self.snap.learned_here if self.snap.learned_here else None

    def shown(self) -> list[str]:
        """The states to show: all but paused, which only a scheduler that pauses (PBT) brings, when there is none."""
        return [s for s in STATES if s != "paused" or self.snap.trials[s]]

    def trials(self) -> str:
        return ", ".join(f"{self.snap.trials[s]} {s}" for s in self.shown())

    def best(self) -> str:
        if self.snap.best is None:
            return "best ACC: none yet"
        acc, label, trial_id = self.snap.best
        return f"best {label} ACC {acc:.2f} ({trial_id})"

    def line(self) -> str:
        s = self.snap
        return (f"[{self.name}] tasks {s.tasks_done}/{s.tasks_total} | trials {self.trials()} | elapsed "
                f"{clock(self.elapsed)}, ETA {clock(self.eta)} | {self.best()}")

    def __rich__(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        s = self.snap
        bar = Table.grid(padding=(0, 1))
        bar.add_row(f"[bold]{self.name}[/]", ProgressBar(total=max(1, s.tasks_total), completed=s.tasks_done, width=40),
                    f"{s.tasks_done}/{s.tasks_total} tasks", f"elapsed {clock(self.elapsed)}", f"ETA {clock(self.eta)}")
        colors = {"ok": "green", "running": "cyan", "pending": "white", "paused": "blue", "error": "red",
                  "stopped": "yellow"}
        trials = ", ".join(f"[{colors[k]}]{s.trials[k]} {k}[/]" for k in self.shown())
        return Group(bar, f"  trials: {trials}", f"  {self.best()}")


class SweepProgress(tune.Callback):
    """The live view (`live=True`, on a terminal) or a plain line every `every` seconds (`live=False`).

    `tasks`: how many tasks the whole sweep learns (default: estimated from the trials made so far); the trial count
    is Tune's. Call `close()` when Tuner.fit returns (or raises): it draws or prints the last state.
    """

    def __init__(self, name: str, every: float = 30.0, live: bool | None = None, tasks: int | None = None) -> None:
        self.name = name
        self.every = every
        self.live = sys.stdout.isatty() if live is None else live
        self.tasks = tasks
        self._reset()

    def _reset(self) -> None:
        self.trials = 0
        self._start = time.monotonic()
        self._printed = -math.inf
        self._baseline: dict[str, int] = {}
        self._num_tasks: dict[str, int] = {}
        self._snap = Snapshot()
        self._display = None

    def __getstate__(self) -> dict:  # Tune pickles its callbacks with the experiment: settings only
        return {k: self.__dict__[k] for k in ("name", "every", "live", "tasks")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def view(self) -> View:
        return View(self.name, self._snap, time.monotonic() - self._start)

    def __rich__(self):
        return self.view().__rich__()

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self.trials = total_num_samples or 0
        self._start = time.monotonic()  # the clock starts with the sweep, not with this object
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._display = Live(self, console=Console(file=sys.stdout), refresh_per_second=2)
            self._display.start()

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._snap = count(trials, max(self.trials, len(trials)), self.tasks, self._baseline, self._num_tasks)
        if not self.live and time.monotonic() - self._printed >= self.every:
            self._printed = time.monotonic()
            print(self.view().line(), flush=True)

    def on_experiment_end(self, trials: list, **info) -> None:
        # No recount: after Ctrl-C, Tune has marked the unfinished trials terminated; the last step's view is true.
        self.close()

    def close(self) -> None:
        """Draw or print the last state once; later calls do nothing."""
        if self._display is not None:
            self._display.stop()
            self._display = None
        elif not self.live and self._printed != math.inf:
            print(self.view().line(), flush=True)
        self._printed = math.inf


class _Stdout(logging.StreamHandler):
    """Writes to sys.stdout as it is at each line: the live view swaps in a proxy that prints above it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


class _LogFile(logging.FileHandler):
    """The per-task log; a line it cannot write (a full disk) is dropped, not a traceback: the Parquet writer
    reports that failure in one line and stops the sweep."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


@contextmanager
def task_log(results_dir: Path, verbose: bool) -> Iterator[Path]:
    """Send the per-task lines to `<results_dir>/sweep.log` (appended; timestamped) and, if `verbose`,
    to stdout, for the duration of the block."""
    path = Path(results_dir) / "sweep.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(TASK_LOGGER)
    to_file = _LogFile(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handlers = [to_file, _Stdout()] if verbose else [to_file]
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not also through Ray's root handlers
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield path
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(level)
        logger.propagate = propagate
