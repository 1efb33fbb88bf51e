"""The state of a search that Ray Tune does not carry over a driver restart, rebuilt from the Parquet results.

Two gaps, both in Ray Tune's source (Ray 2.5x-2.6x):
- ASHA's rungs (the values recorded at each milestone) are not part of Tune's saved experiment state
  (ray-project/ray#30838): Tune restores the scheduler as pickled when the search began, with empty
  rungs, so after a restart the first trial to reach each rung would pass unjudged.
  `ResumableASHA` replays the `tasks` rows into its rungs, in the order they were written, before it
  takes its first trial.
- The Optuna searcher is saved with Tune's experiment state, which lags `optuna.db`: a trial asked
  for (or told) after the last snapshot stays RUNNING in the study forever, and TPE's constant liar
  then counts it as a bad result. `SelectingSearch.restore` settles every trial the restored search
  does not know (a "lost" trial): a RUNNING one is told what its `runs` row says, or FAIL; one the
  study had been told of gets the `runs` row the driver did not live to write. So the study's
  COMPLETE, PRUNED and FAIL counts always equal the Parquet's ok, stopped and error counts. Tune
  proposes a lost trial's settings again (the sampler restarts from the snapshot), so its task
  results are left out of the rebuilt rungs: they count once, as in an uninterrupted search.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from cldst import results
from cldst.config import RunConfig

TUNE_TRIAL_ID = "tune_trial_id"  # Optuna user attribute: the Tune trial a study trial was asked for
RUN_COLUMN = {"val_avg_acc": "val_acc", "avg_acc": "acc"}  # the runs column holding a metric's final value
STATUS = {TrialState.COMPLETE: "ok", TrialState.PRUNED: "stopped", TrialState.FAIL: "error",
          TrialState.RUNNING: "error"}  # a lost trial's runs status, from its study state
LOST = ("lost: the search driver stopped before Ray Tune saved this trial, so the resumed search did not "
        "continue it")


def record_lost(results_dir: Path, experiment: str, config: dict, trial_id: str, status: str) -> dict:
    """The runs row of a trial Tune lost (`config`: its RunConfig fields), from its tasks rows, with LOST as its
    note: its Parquet then counts it as ended, and no reader takes its tasks rows for a run still going."""
    rows = results.trial_rows(results_dir, "tasks", trial_id)
    resolved = RunConfig.from_dict(config).resolve().to_dict()
    common = results.common_columns(resolved, experiment, trial_id, rows[-1]["node"] if rows else "")
    row = results.run_row(common, rows, status, LOST, None)
    results.write_part(results_dir, "runs", trial_id, [row])
    return row


def read_rows(results_dir: Path, kind: str) -> list[dict]:
    """Every row of `kind` under the experiment folder; none before the first trial wrote any."""
    try:
        loaded = results.load(results_dir, on_bad="skip")
    except results.ResultsError:  # no tasks/ or runs/ folder yet
        return []
    return (loaded.tasks if kind == "tasks" else loaded.runs).to_pylist()


class ResumableASHA(ASHAScheduler):
    """ASHA (one bracket) whose rungs are rebuilt from the Parquet `tasks` rows when a search resumes;
    `searcher` names the trials it lost (SelectingSearch.lost), whose rows are left out."""

    def __init__(self, results_dir: str | Path, searcher: SelectingSearch, **options: object) -> None:
        super().__init__(**options)
        self.results_dir, self.searcher = Path(results_dir), searcher
        self._replayed = False  # pickled as False with the Tuner: every driver process replays once
        self._stopped: set[str] = set()  # trials the replay stopped: a resumed one stops at its next result

    def on_trial_add(self, tune_controller: object, trial: object) -> None:
        if not self._replayed:  # after Tune restored the searcher (which settles the study), before any result
            self._replayed = True
            lost = self.searcher.lost
            self.replay([row for row in read_rows(self.results_dir, "tasks") if row["trial_id"] not in lost])
        super().on_trial_add(tune_controller, trial)

    def replay(self, rows: list[dict]) -> None:
        """Feed the recorded task results to the rungs in the order they were written, as they came first."""
        (bracket,) = self._brackets
        for row in sorted(rows, key=lambda r: r["created_at"]):
            tasks_done, value = row["task"] + 1, row[self._metric]
            if value is None or tasks_done >= self._max_t:  # the last task is never judged
                continue
            trial = SimpleNamespace(trial_id=row["trial_id"])
            if bracket.on_result(trial, tasks_done, self._metric_op * value) == TrialScheduler.STOP:
                self._stopped.add(row["trial_id"])

    def on_trial_result(self, tune_controller: object, trial: object, result: dict) -> str:
        if trial.trial_id in self._stopped:  # stopped before the restart, then resumed from its checkpoint
            return TrialScheduler.STOP
        return super().on_trial_result(tune_controller, trial, result)


class SelectingSearch(OptunaSearch):
    """Optuna over the search space, told a trial's value only when it learned every task: a trial ASHA
    stopped early is pruned (Optuna keeps its per-task reports), so an early value never counts as final.

    `results_dir`, `experiment` and `fixed` (the RunConfig fields every trial shares) let a restored
    search settle the study's trials from the Parquet results.
    """

    def __init__(self, space: dict, *, results_dir: str | Path, experiment: str, fixed: dict,
                 **options: object) -> None:
        super().__init__(space, **options)
        self.results_dir, self.experiment, self.fixed = Path(results_dir), experiment, fixed
        self.lost: set[str] = set()  # Tune trial ids of the study's trials that Tune's saved state does not hold

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ID, trial_id)  # in optuna.db at once: settle() reads it
        return params

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and self._state(ot_trial._trial_id).is_finished():
            self._completed_trials.add(trial_id)  # told before a restart, or settled by restore()
            return
        finished = result is not None and result.get("tasks_done") == result.get("num_tasks")
        super().on_trial_complete(trial_id, result if finished else None, error)

    def restore(self, checkpoint_path: str) -> None:
        """Tune restores the searcher when it resumes a search: settle the study there, before any trial runs."""
        super().restore(checkpoint_path)
        self.settle()

    def settle(self) -> None:
        """Make the study and the Parquet agree on every trial this restored search does not know.

        Tune continues (or has ended) the trials its saved state holds, and tells the study their end. The
        others were asked for, and maybe run and told, after Tune's last snapshot: a RUNNING one is told what
        its runs row says (FAIL without one); one the study was told of gets the runs row its driver did not
        live to write. A runs row written here takes the study's state as its status and LOST as its note.
        """
        ended = {row["trial_id"]: row for row in read_rows(self.results_dir, "runs")}
        self.lost = set()
        for frozen in self._ot_study.get_trials(deepcopy=False):
            trial_id = frozen.user_attrs.get(TUNE_TRIAL_ID) or f"lost-optuna-{frozen.number}"
            if trial_id in self._ot_trials:
                continue
            self.lost.add(trial_id)
            row = ended.get(trial_id) or record_lost(self.results_dir, self.experiment, {**self.fixed, **frozen.params},
                                                     trial_id, STATUS[frozen.state])
            if frozen.state != TrialState.RUNNING:
                continue
            value = row[RUN_COLUMN[self.metric]]
            if row["status"] == "ok" and value is not None:
                self._ot_study.tell(frozen.number, value)
            else:
                self._ot_study.tell(frozen.number, state=TrialState.PRUNED if row["status"] == "stopped"
                                    else TrialState.FAIL)

    def _state(self, study_trial_id: int) -> TrialState:
        return self._ot_study._storage.get_trial(study_trial_id).state
