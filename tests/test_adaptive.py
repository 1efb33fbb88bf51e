"""Adaptive DST (sweeps/adaptive.py): an exploit continues from the donor's weights and masks bit-exactly, the
lineage of every member is rebuilt from Parquet alone, every member keeps one tasks row per task (those an exploit
threw away marked `discarded`), the population is ranked on validation data only, and a killed driver's rerun
finishes the population without duplicate rows (the races of a resume: tests/test_races.py).

(That each task trains with its own settings is tests/test_protocol.py::test_each_task_trains_with_its_own_settings.)
"""

import dataclasses
import itertools
import json
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import ray
import torch
from ray import tune
from ray.tune.schedulers.pbt import _PBTTrialState
from ray_cluster import driver_env
from test_faults import Driver, no_driver_left  # noqa: F401 (no_driver_left: an autouse fixture)

from analysis import adaptive as analysis_adaptive
from analysis.data import load_all
from analysis.report import write_report
from cldst import checkpoint, continual, results
from cldst import tune as cldst_tune
from cldst.config import RunConfig
from cldst.data import load_benchmark
from cldst.lineage import LineageError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeps import adaptive  # noqa: E402

pytestmark = pytest.mark.timeout(240)
TRAINABLE = cldst_tune.trainable


@pytest.fixture(scope="module")
def synthetic():
    return load_benchmark("synthetic")


def small(**overrides) -> RunConfig:
    values = dict(benchmark="synthetic", num_tasks=3, classes_per_task=2, num_classes=6, epochs=2, batch_size=32,
                  update_frequency=3, device="cpu")
    return RunConfig(**{**values, **overrides}).resolve()


def run_with_states(cfg, bench, state=None):
    states = []
    learned = continual.run(cfg, bench, continual.Hooks(on_task_end=lambda r, s: states.append(s)), state)
    return learned, states


def owned_weights_equal(before: dict, after: dict, tasks: int) -> bool:
    """The weights the first `tasks` tasks own, and those tasks' masks, are the same bits in both states."""
    masks_before, masks_after = checkpoint.task_masks(before)[:tasks], checkpoint.task_masks(after)[:tasks]
    for mask_before, mask_after in zip(masks_before, masks_after, strict=True):
        for name, mask in mask_before.items():
            if not torch.equal(mask, mask_after[name]):
                return False
    owned = {name: torch.stack([m[name] for m in masks_before]).any(0) for name in masks_before[0]}
    return all(torch.equal(before["model"][name][mask], after["model"][name][mask]) for name, mask in owned.items())


def test_an_exploit_continues_from_the_donors_weights_and_masks_bit_exactly(synthetic, tmp_path):
    donor = small(growth="momentum", density=0.2, death_rate=0.5)
    donor_results, donor_states = run_with_states(donor, synthetic)
    path = checkpoint.save({**donor_states[0], "trial_id": "donor"}, tmp_path / "state.pt")
    explorer = dataclasses.replace(donor, growth="gradient", density=0.3, death_rate=0.3, update_frequency=2)
    state = checkpoint.load(path, explorer.to_dict())  # what the exploiting trial's trainable reads
    assert state["trial_id"] == "donor"
    assert all(torch.equal(state["model"][name], t) for name, t in donor_states[0]["model"].items())
    learned, states = run_with_states(explorer, synthetic, state)
    # The explorer's model after its next task keeps task 0's mask and weights from the donor, bit for bit.
    assert owned_weights_equal(donor_states[0], states[0], tasks=1)
    assert learned[0].acc == donor_results[0].acc
    # Task 0 keeps the settings it trained with in the donor; the tasks to come train with the explored ones.
    assert [(r.growth, r.density, r.death_rate) for r in learned] == [
        ("momentum", 0.2, 0.5), ("gradient", 0.3, 0.3), ("gradient", 0.3, 0.3)]
    assert [r["growth"] for r in states[-1]["results"]] == ["momentum", "gradient", "gradient"]
    assert learned[1].task_density == pytest.approx(0.3, abs=0.01)


def task_rows(trial: str, growths: list[str], parents: dict[int, str], discarded: tuple[int, ...] = ()) -> list[dict]:
    cfg = small()
    common = results.common_columns(cfg.to_dict(), "pbt", trial, "node")
    rows = []
    for task, growth in enumerate(growths):
        acc = [90.0 + task] * (task + 1)
        metrics = dict(task=task, acc=acc, fwt_acc=[], avg_acc=acc[0], bwt=0.0, val_acc=acc, val_avg_acc=acc[0],
                       task_density=0.2, capacity_used=0.2 * (task + 1), reused_fraction=0.0, fired_fraction=0.3,
                       train_seconds=1.0, images_per_second=1.0, density=0.1 * (task + 1), growth=growth,
                       prune="magnitude", death_rate=0.5, update_frequency=3)
        rows.append(results.task_row(common, metrics, parents.get(task), task in discarded))
    return rows


def test_the_schedule_of_every_member_is_rebuilt_from_parquet_alone(tmp_path):
    folder = tmp_path / "pbt"
    # A learns 3 tasks; B copies A after task 0; C copies B after task 1 (so C's model: A, B, C). B's task 0 and
    # C's task 1 are the ones they threw away for the donor's.
    results.write_part(folder, "tasks", "A", task_rows("A", ["random", "random", "random"], {}))
    results.write_part(folder, "tasks", "B", task_rows("B", ["unfired", "momentum", "momentum"], {1: "A"}, (0,)))
    results.write_part(folder, "tasks", "C", task_rows("C", ["gradient", "gradient", "unfired"], {2: "B"}, (1,)))
    tasks = load_all(folder).tasks
    chain = analysis_adaptive.schedule(tasks, "C")
    assert list(chain["learned_by"]) == ["A", "B", "C"]
    assert list(chain["growth"]) == ["random", "momentum", "unfired"]
    assert list(chain["density"]) == pytest.approx([0.1, 0.2, 0.3])
    assert list(analysis_adaptive.schedule(tasks, "B")["learned_by"]) == ["A", "B", "B"]
    assert list(analysis_adaptive.schedule(tasks, "A")["learned_by"]) == ["A", "A", "A"]
    results.write_part(folder, "tasks", "D", task_rows("D", ["random", "random"], {1: "gone"}))
    with pytest.raises(LineageError, match="trial gone: no tasks row for task 0"):
        analysis_adaptive.lineage(load_all(folder).tasks, "D")
    # E was exploited after task 1 and stopped before its next task: its model is the one it held before.
    results.write_part(folder, "tasks", "E", task_rows("E", ["random", "momentum"], {}, (1,)))
    assert list(analysis_adaptive.lineage(load_all(folder).tasks, "E")["task"]) == [0]
    # F names B as the parent of its task 1: B's task 0 is discarded, so the rows contradict each other.
    results.write_part(folder, "tasks", "F", task_rows("F", ["random", "random"], {1: "B"}))
    with pytest.raises(LineageError, match="trial B: its row for task 0 is discarded"):
        analysis_adaptive.lineage(load_all(folder).tasks, "F")


@dataclasses.dataclass(frozen=True)
class Member:  # what PBT's ranking reads of a trial
    trial_id: str

    @property
    def experiment_tag(self) -> str:
        return self.trial_id

    def is_finished(self) -> bool:
        return False


def ranked(scheduler: adaptive.ValidationPBT, reports: dict[str, dict]) -> tuple[list[str], list[str]]:
    """(bottom, top) quantile of the population after each member reported `reports[name]` for task 0."""
    for name, report in reports.items():
        trial = Member(name)
        scheduler._trial_state[trial] = _PBTTrialState(trial)
        scheduler._save_trial_state(scheduler._trial_state[trial], 1, report, trial)
    bottom, top = scheduler._quantiles()
    return [t.trial_id for t in bottom], [t.trial_id for t in top]


def report(val: float, test: float, capacity: float = 0.2) -> dict:
    return {"val_avg_acc": val, "val_acc": [val], "avg_acc": test, "acc": [test], "acc_current": test,
            "capacity_used": capacity, "tasks_done": 1, "num_tasks": 3}


@pytest.mark.parametrize("donor_done, exploited", [(1, True), (2, False), (0, False)])
def test_a_member_is_exploited_only_by_a_donor_at_its_own_task_boundary(donor_done, exploited, monkeypatch):
    """After a rerun members may stand at different tasks: a member behind its donor would skip a task it never
    trained, one ahead would learn a task twice. Only equal progress lets the exploit through."""
    scheduler = adaptive.ValidationPBT(0.0, hyperparam_mutations={"growth": ["random", "momentum"]})
    member, donor = Member("m"), Member("d")
    for trial, done in ((member, 1), (donor, donor_done)):
        scheduler._trial_state[trial] = _PBTTrialState(trial)
        scheduler._trial_state[trial].last_result = {**report(80, 80), "tasks_done": done}
    calls = []
    monkeypatch.setattr(adaptive.PopulationBasedTraining, "_exploit", lambda self, *args: calls.append(args))
    monkeypatch.setattr(Member, "run_metadata", SimpleNamespace(invalidate_cache=lambda: None), raising=False)
    scheduler._exploit(None, member, donor)
    assert calls == ([(None, member, donor)] if exploited else [])


@dataclasses.dataclass(frozen=True)
class Restored(Member):  # a member as a rerun hands it back: with the checkpoint of its last task, PENDING
    latest_checkpoint_result: SimpleNamespace = dataclasses.field(hash=False, compare=False)
    status: str = dataclasses.field(default="PENDING", hash=False, compare=False)

    def set_status(self, status: str) -> None:  # Trial.set_status
        object.__setattr__(self, "status", status)


class StatusBook:  # the tune controller's _set_trial_status, for the members it holds already
    def _set_trial_status(self, trial: Restored, status: str) -> None:
        trial.set_status(status)


def test_a_rerun_ranks_members_only_with_those_at_the_same_task_boundary(monkeypatch):
    """After a driver kill, members stand at the tasks their checkpoints hold. Each keeps its checkpoint's score,
    the barrier is the next task of the member furthest behind, the members that stand at it wait there paused
    (Tune would start them, and they would learn on past it), and a ranking there leaves out the members ahead
    of it (Ray's would rank them by their scores at later boundaries)."""
    monkeypatch.setattr(cldst_tune, "continue_from_surviving_checkpoint", lambda trial: False)
    monkeypatch.setattr(adaptive.PopulationBasedTraining, "on_trial_add",
                        lambda self, controller, trial: self._trial_state.__setitem__(trial, _PBTTrialState(trial)))
    scheduler = adaptive.ValidationPBT(0.0, hyperparam_mutations={"growth": ["random", "momentum"]},
                                       quantile_fraction=0.5)
    members = {}
    for name, done, val in (("ahead", 3, 99.0), ("a", 2, 70.0), ("behind", 1, 10.0), ("b", 2, 80.0)):
        members[name] = Restored(name, SimpleNamespace(metrics={**report(val, 0.0), "tasks_done": done}))
        scheduler.on_trial_add(StatusBook(), members[name])
    assert scheduler._next_perturbation_sync == 2
    # paused at the barrier: a once "behind" came, b as it came; "ahead" has learned all 3 tasks, Tune ends it
    assert {name: member.status for name, member in members.items()} == {
        "ahead": "PENDING", "a": "PAUSED", "behind": "PENDING", "b": "PAUSED"}
    assert scheduler._trial_state[members["b"]].last_score == 80.0  # the score of its checkpoint's report
    behind = members["behind"]  # learns task 1 again, and reaches the barrier
    scheduler._save_trial_state(scheduler._trial_state[behind], 2, {**report(75.0, 0.0), "tasks_done": 2}, behind)
    bottom, top = scheduler._quantiles()
    assert ([t.trial_id for t in bottom], [t.trial_id for t in top]) == (["a"], ["b"])  # "ahead" is not ranked
    # what the tasks rows of task 2 record: 3 members compared, where an uninterrupted run would have ranked 4
    assert scheduler.ranked_among == {("a", 2): 3, ("b", 2): 3, ("behind", 2): 3}


@dataclasses.dataclass(frozen=True)
class Waiting(Member):  # a restored member whose actor has not started: what it was restored from is its model
    status: str
    checkpoint: str = "its restored checkpoint"


class NoSaves:  # a tune controller that refuses a save: a member that does not run has no actor to save
    def _schedule_trial_save(self, trial, result=None):
        raise AssertionError(f"a save was asked of {trial.trial_id}")


@pytest.mark.parametrize("status", ["PENDING", "RUNNING"])
def test_a_top_member_that_has_not_run_since_the_rerun_donates_the_checkpoint_it_was_restored_from(status):
    """Ray asks a top member's actor for a save. After a rerun a member can stand at the barrier without an
    actor (its checkpoint already holds the task): the save's future was None, the exploits it should have
    donated to were skipped, and the population could wait for good."""
    scheduler = adaptive.ValidationPBT(0.0, hyperparam_mutations={"growth": ["random", "momentum"]})
    top, bottom = Waiting("top", status), Waiting("bottom", "PAUSED")
    for trial in (top, bottom):
        scheduler._trial_state[trial] = _PBTTrialState(trial)
    if status == "PENDING":
        scheduler._checkpoint_or_exploit(top, NoSaves(), [top], [bottom])
        assert scheduler._trial_state[top].last_checkpoint == "its restored checkpoint"
    else:  # a running member is asked to save, as Ray does
        with pytest.raises(AssertionError, match="a save was asked of top"):
            scheduler._checkpoint_or_exploit(top, NoSaves(), [top], [bottom])


def test_the_population_is_ranked_on_validation_accuracy_never_on_test_data():
    honest = {"w": report(60, 60), "x": report(70, 70), "y": report(80, 80), "z": report(90, 90)}
    # Test accuracies poisoned to say the opposite (and one impossible value): the ranking must not move.
    poisoned = {"w": report(60, 1e9), "x": report(70, 99), "y": report(80, float("nan")), "z": report(90, -1)}
    mutations = {"growth": ["random", "momentum"]}
    for reports in (honest, poisoned):
        assert ranked(adaptive.ValidationPBT(0.0, hyperparam_mutations=mutations), reports) == (["w"], ["z"])
    # The capacity variant: equal validation ACC, the member that owns less of the network ranks higher.
    frugal = {"a": report(80, 80, 0.6), "b": report(80, 80, 0.2), "c": report(70, 70, 0.2), "d": report(75, 90, 0.4)}
    assert ranked(adaptive.ValidationPBT(0.1, hyperparam_mutations=mutations), frugal) == (["c"], ["b"])
    with pytest.raises(ValueError, match="val_avg_acc missing"):
        adaptive.rank_score({"avg_acc": 90.0, "capacity_used": 0.1}, 0.0)


def quick_pbt(tmp_path: Path, name: str, population: int, num_tasks: int) -> list[str]:
    return ["--preset", "quick", "--epochs", "1", "--num-tasks", str(num_tasks), "--population", str(population),
            "--quantile", "0.5", "--growth", "random", "momentum", "--density", "0.2", "0.1", "--name", name,
            "--results", str(tmp_path / name), "--storage", str(tmp_path / "ray")]


def checkpoints(storage: Path) -> dict[tuple[str, int], dict]:
    """Every task checkpoint Tune kept, by (trial that made it, tasks learned)."""
    states = [torch.load(path, weights_only=True) for path in storage.rglob("state.pt")]
    return {(state["trial_id"], state["next_task"]): state for state in states}


def test_a_pbt_run_exploits_exactly_and_its_parquet_holds_each_members_lineage(local_ray, tmp_path, capsys):
    assert adaptive.main(quick_pbt(tmp_path, "pbt", population=2, num_tasks=3)) == 0
    loaded = load_all(tmp_path / "pbt")
    runs, tasks = loaded.runs, loaded.tasks
    assert list(runs["status"]) == ["ok", "ok"]
    exploits = tasks[tasks["parent_trial_id"].notna() & ~tasks["discarded"]]  # a discarded task's checkpoint is gone
    assert len(exploits) >= 1  # two members, quantile 0.5: the worse one copies the better after tasks 0 and 1
    saved = checkpoints(tmp_path / "ray" / "pbt")
    for row in exploits.itertuples():
        donor, explorer = saved[(row.parent_trial_id, row.task)], saved[(row.trial_id, row.task + 1)]
        assert owned_weights_equal(donor, explorer, tasks=row.task)
    # each task after the first was learned after a ranking of the whole population (null: none before task 0)
    assert [None if pd.isna(n) else n for n in tasks.sort_values("task")["ranked_among"]] == [None] * 2 + [2] * 4
    for run in runs.itertuples():
        chain = analysis_adaptive.lineage(tasks, run.trial_id)
        assert list(chain["task"]) == [0, 1, 2]
        # The runs row summarises the model the member ended with: its lineage's accuracies and settings.
        assert [list(r) for r in run.acc_matrix] == [list(a) for a in chain["acc"]]
        config = RunConfig.from_dict(json.loads(run.config_json)).resolve()
        assert [config.task_value("growth", t) for t in range(3)] == list(chain["growth"])
        if chain["parent_trial_id"].notna().any():  # rerun alone, the schedule it followed gives the same matrix
            rerun = continual.run(dataclasses.replace(config, device="cpu"), load_benchmark("digits"))
            assert [r.acc for r in rerun] == [list(r) for r in run.acc_matrix]
    report = write_report(loaded, tmp_path / "report", [tmp_path / "pbt"]).read_text()
    best = analysis_adaptive.best_member(analysis_adaptive.experiments(loaded)[0])
    assert f"schedule of the best member {best['trial_id']}" in report
    assert (tmp_path / "report" / "figures" / "adaptive_settings_pbt.png").is_file()


def test_every_member_has_one_row_per_task_and_those_an_exploit_dropped_are_discarded(local_ray, tmp_path,
                                                                                     monkeypatch):
    # The later a member reports a task, the lower it ranks: at each synchronisation the last reporter is exploited
    # at its own report (Tune never keeps that report's checkpoint), the one before it once it had paused.
    arrivals = itertools.count()
    monkeypatch.setattr(adaptive, "rank_score", lambda result, capacity_weight: -next(arrivals))
    assert adaptive.main(quick_pbt(tmp_path, "rows", population=4, num_tasks=3)) == 0
    loaded = load_all(tmp_path / "rows")
    runs, tasks = loaded.runs, loaded.tasks
    keys = list(zip(tasks["trial_id"], tasks["task"], strict=True))
    assert len(keys) == len(set(keys)) == 4 * 3
    assert sorted(keys) == sorted((trial, task) for trial in runs["trial_id"] for task in range(3))
    # Exactly the tasks after which a member went on from a donor's checkpoint: two per synchronisation.
    dropped = {(row.trial_id, row.task - 1) for row in tasks.itertuples() if isinstance(row.parent_trial_id, str)}
    assert len(dropped) == 2 * 2
    assert {(row.trial_id, row.task) for row in tasks.itertuples() if row.discarded} == dropped
    for run in runs.itertuples():  # the runs rows summarise the lineages, which skip the discarded rows
        chain = analysis_adaptive.lineage(tasks, run.trial_id)
        assert list(chain["task"]) == [0, 1, 2] and not chain["discarded"].any()
        assert [list(r) for r in run.acc_matrix] == [list(a) for a in chain["acc"]]


def member_1_fails_after_its_first_task(config: dict, bench) -> None:
    """The trainable, but member 00001 raises whenever it resumes from a checkpoint (each try Tune gives it)."""
    if tune.get_context().get_trial_id().endswith("_00001") and tune.get_checkpoint() is not None:
        raise RuntimeError("simulated failure of a member")
    TRAINABLE(config, bench)


@pytest.mark.timeout(180)  # before the fix, the population waited for the failed member forever
def test_a_member_that_fails_for_good_does_not_stall_the_population(local_ray, tmp_path, monkeypatch):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    monkeypatch.setattr(cldst_tune, "trainable", member_1_fails_after_its_first_task)
    assert adaptive.main(quick_pbt(tmp_path, "failed", population=4, num_tasks=3)) == 0
    runs = load_all(tmp_path / "failed").runs
    assert sorted(zip(runs["trial_id"].str[-5:], runs["status"], strict=True)) == [
        ("00000", "ok"), ("00001", "error"), ("00002", "ok"), ("00003", "ok")]


def test_a_killed_driver_reruns_to_the_same_population_without_duplicates(local_ray, tmp_path, caplog):
    argv = [*quick_pbt(tmp_path, "resume", population=4, num_tasks=4), "--verbose"]
    driver = Driver([str(REPO / "sweeps" / "adaptive.py"), *argv], tmp_path, driver_env())
    driver.wait_for(lambda: driver.output.count("task 2/4") >= 2)  # Ctrl-C once members have learned task 2
    driver.process.send_signal(signal.SIGINT)
    assert driver.wait(timeout=180) == 1, driver.output
    assert adaptive.main(argv) == 0  # the same command again
    # No donor skipped: a member restored but not yet running donates its checkpoint, never an actor's save
    assert not [r.getMessage() for r in caplog.records if "Error resolving result" in r.getMessage()]
    loaded = load_all(tmp_path / "resume")
    assert len(loaded.runs) == 4 and set(loaded.runs["status"]) == {"ok"}
    keys = list(zip(loaded.tasks["trial_id"], loaded.tasks["task"], strict=True))
    assert len(keys) == len(set(keys)) == 4 * 4
    for trial in loaded.runs["trial_id"]:
        assert list(analysis_adaptive.lineage(loaded.tasks, trial)["task"]) == [0, 1, 2, 3]
    # the last task was learned after the rerun's ranking at its boundary, which its rows record
    assert set(loaded.tasks.loc[loaded.tasks["task"] == 3, "ranked_among"]) <= {1, 2, 3, 4}


@pytest.mark.parametrize("options, message", [
    (["--val-fraction", "0"], "--val-fraction: 0 leaves no validation data"),
    (["--population", "1"], "--population: must be >= 2"),
    (["--quantile", "0.6"], "--quantile: must be a number in (0, 0.5]"),
    (["--num-tasks", "1"], "--num-tasks: PBT acts between tasks"),
    (["--capacity-weight", "nan"], "--capacity-weight: must be a number >= 0"),
    (["--growth", "random", "--density", "0.2", "--death-rate", "0.5"], "PBT has nothing to explore"),
    (["--max-concurrent", "2"], "--max-concurrent: not for a population"),
])
def test_bad_options_exit_2_with_one_line_and_write_nothing(options, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        adaptive.main(["--preset", "quick", "--results", str(tmp_path / "out"), *options])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()
