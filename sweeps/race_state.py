"""The race as a Ray Tune searcher: it proposes (configuration, seed) trials look by look, and its state is the
Parquet results.

Tune asks the searcher for a trial whenever it has room for one. The searcher replays the race on the results it
has (analysis/race_report.replay: a pure function of the runs) and proposes a run the next look still needs that
is neither ended nor running; with none, it waits (None); once the race has ended, FINISHED. After every trial's
end it says each new look in one line.

Resuming after a driver kill: Tune saves this searcher with its experiment state (the trials it was running) and
restores it there. `restore` then rebuilds the results from the Parquet runs rows, which hold every trial that
ended, saved by Tune or not. A trial that had learned some tasks but that Tune's saved state does not know (it
started after the last snapshot) cannot be continued: it gets a runs row marked lost (search_state.record_lost),
and its configuration and seed are proposed again. Nothing that ended runs again, and nothing Tune continues is
proposed twice.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from ray.tune.search import Searcher

from analysis import looks, race_report, racing
from sweeps.search_state import read_rows, record_lost

METRIC = "val_avg_acc"  # after the last task: the run's final validation ACC (its runs row's val_acc)


class RaceSearch(Searcher):
    """Proposes the runs of the race described by `plan` (analysis.race_report.Plan) under `results_dir`."""

    def __init__(self, plan: race_report.Plan, results_dir: str | Path, metric: str = METRIC) -> None:
        super().__init__(metric=metric, mode="max")
        self.plan, self.results_dir = plan, Path(results_dir)
        self.value = "val_acc" if metric == METRIC else "acc"  # the runs column that holds `metric` at the end
        shape = (len(plan.configurations), len(plan.seeds))
        self.found = race_report.Outcomes(np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, bool))
        self.running: dict[str, tuple[int, int]] = {}  # Tune trial id -> (configuration, seed index)
        self.said = 0  # looks already said
        self.labels = race_report.names(plan.configurations)

    def state(self) -> racing.Race:
        return racing.race(self.found.val, self.plan.looks, self.found.failed, step=self.found.step)

    def suggest(self, trial_id: str) -> dict | None:
        result = self.state()
        if result.finished:
            return Searcher.FINISHED if not self.running else None
        busy = set(self.running.values())
        for s in range(result.next_seeds):  # the lower seeds first: a look's runs end together
            for c in result.contenders:
                ended = not np.isnan(self.found.val[c, s]) or self.found.failed[c, s]
                if not ended and (c, s) not in busy:
                    self.running[trial_id] = (c, s)
                    return {**self.plan.configurations[c], "seed": self.plan.seeds[s]}
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        where = self.running.pop(trial_id, None)
        if where is None:  # ended before a restart, and already in the results
            return
        c, s = where
        if result and result.get("tasks_done") == result.get("num_tasks") and result.get(self.metric) is not None:
            self.found.val[c, s], self.found.test[c, s] = result[self.metric], result["avg_acc"]
            self.found.rows[(c, s)] = list(result[self.value])  # its last task's row: the lattice's step
        else:
            self.found.failed[c, s] = True
        self.say_looks()

    def say_looks(self) -> None:
        """A line for each look taken since the last said: configurations left, runs used against the fixed design."""
        result = self.state()
        lines = race_report.look_lines(result, self.labels)
        fixed = len(self.labels) * self.plan.looks[-1]
        for line, look in zip(lines[self.said:], result.looks[self.said:], strict=True):
            print(f"{line}; {len(look.contenders) - len(look.left)} still in it; runs so far "
                  f"{self.found.ended} of the fixed design's {fixed}", flush=True)
        self.said = len(lines)

    def rebuild(self) -> None:
        """The results from the Parquet runs rows; a trial with tasks rows that neither ended nor is running (Tune
        lost it) gets its lost runs row, and its run is proposed again."""
        runs = read_rows(self.results_dir, "runs")
        self.found = race_report.outcomes(runs, self.plan, self.value)
        ended = {row["trial_id"] for row in runs}
        lost = {row["trial_id"]: row for row in read_rows(self.results_dir, "tasks")
                if row["trial_id"] not in ended and row["trial_id"] not in self.running}
        for trial_id, row in lost.items():
            record_lost(self.results_dir, self.plan.experiment, json.loads(row["config_json"]), trial_id, "error")
        self.running = {t: where for t, where in self.running.items() if t not in ended}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump({"running": self.running}, file)

    def restore(self, checkpoint_path: str) -> None:
        """Tune restores the searcher when it resumes the race: rebuild its results there, before any trial runs."""
        with open(checkpoint_path, "rb") as file:
            self.running = pickle.load(file)["running"]
        self.rebuild()
        self.said = 0
        self.say_looks()


class GridLooksSearch(RaceSearch):
    """Proposes the grid's runs look by look (analysis/looks.py): every configuration runs the next look's seeds
    while some primary claim is open. Decides on final validation ACC (`metric` "val_acc"; "acc" where the runs
    hold no validation split); its state is the Parquet, as the race's."""

    def __init__(self, plan: race_report.Plan, results_dir: str | Path, min_effect: float, metric: str) -> None:
        super().__init__(plan, results_dir, metric=METRIC if metric == "val_acc" else "avg_acc")
        self.min_effect = min_effect

    def state(self) -> looks.SequentialLooks:
        ended = ~np.isnan(self.found.val) | self.found.failed
        runs = looks.frame(self.plan, self.found.val, self.found.rows)
        return looks.sequential(runs, ended, self.plan.seeds, self.plan.looks, self.min_effect)

    def say_looks(self) -> None:
        result = self.state()
        fixed = len(self.plan.configurations) * self.plan.looks[-1]
        lines = looks.look_lines(result, fixed, len(self.plan.configurations))
        for line in lines[self.said:]:
            print(line, flush=True)
        self.said = len(lines)
