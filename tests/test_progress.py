"""The sweep's progress view on hand-made trials (no Ray): the counts, the task totals, the ETA, the best ACC and
its label, the plain line, the rich frame, and the per-task log."""

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps import progress  # noqa: E402

pytestmark = pytest.mark.timeout(30)


def trial(trial_id: str, status: str, tasks_done: int | None = None, num_tasks: int = 5, **metrics: float):
    result = {} if tasks_done is None else {"tasks_done": tasks_done, "num_tasks": num_tasks, **metrics}
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=result,
                           config={"benchmark": "digits", "num_tasks": num_tasks})


SWEEP = [trial("t0", "TERMINATED", 5, avg_acc=90.0), trial("t1", "TERMINATED", 5, avg_acc=93.5),
         trial("t2", "TERMINATED", 2, avg_acc=99.0),  # stopped early: its ACC is not a final ACC
         trial("t3", "ERROR", 1), trial("t4", "RUNNING", 3), trial("t5", "PENDING"), trial("t6", "PAUSED")]


def test_counts_tasks_and_the_best_final_acc_labelled_test():
    snap = progress.count(SWEEP, expected_trials=10, expected_tasks=50, baseline={}, num_tasks={})
    assert snap.trials == {"ok": 2, "running": 1, "pending": 1 + 3, "paused": 1, "error": 1, "stopped": 1}
    assert snap.tasks_done == 5 + 5 + 2 + 1 + 3
    assert snap.tasks_total == 50 - 3 - 4  # the stopped and the failed trial will not learn their other tasks
    assert snap.best == (93.5, "test", "t1")


def test_paused_shows_only_where_a_trial_is_paused():
    line = progress.View("s", progress.count(SWEEP[:-1], 6, 30, {}, {}), 1.0).line()
    assert "trials 2 ok, 1 running, 1 pending, 1 error, 1 stopped |" in line and "paused" not in line


def test_validation_acc_is_preferred_and_labelled():
    trials = [trial("a", "TERMINATED", 5, avg_acc=95.0, val_avg_acc=80.0),
              trial("b", "TERMINATED", 5, avg_acc=90.0, val_avg_acc=85.0)]
    snap = progress.count(trials, 2, None, {}, {})
    assert snap.best == (85.0, "val", "b")  # b: the better validation ACC, though a's test ACC is higher
    assert "best val ACC 85.00 (b)" in progress.View("s", snap, 1.0).line()


def test_without_a_total_the_trials_not_made_yet_count_as_the_average_split():
    trials = [trial("a", "RUNNING", 1, num_tasks=4), trial("b", "PENDING", None, num_tasks=10)]  # b: from its config
    assert progress.count(trials, 4, None, {}, {}).tasks_total == 14 + 7 * 2


def test_eta_comes_from_the_tasks_learned_by_this_process_only():
    baseline, num_tasks = {}, {}
    before = [trial("a", "RUNNING", 4, num_tasks=10)]  # a resumed trial: 4 tasks learned before this process
    assert progress.count(before, 1, None, baseline, num_tasks).learned_here == 0
    snap = progress.count([trial("a", "RUNNING", 6, num_tasks=10)], 1, None, baseline, num_tasks)
    assert (snap.tasks_done, snap.learned_here) == (6, 2)
    view = progress.View("s", snap, elapsed=60.0)
    assert view.eta == pytest.approx(4 * 60.0 / 2)  # 4 tasks left at 2 tasks a minute
    assert "tasks 6/10" in view.line() and "elapsed 0:01:00, ETA 0:02:00" in view.line()
    assert progress.View("s", progress.count(before, 1, None, {}, {}), 5.0).eta is None


def test_the_plain_line_and_the_rich_frame_show_the_same_numbers():
    snap = progress.count(SWEEP, 10, 50, {}, {})
    line = progress.View("quick", snap, 75.0).line()
    assert line == ("[quick] tasks 16/43 | trials 2 ok, 1 running, 4 pending, 1 paused, 1 error, 1 stopped | elapsed "
                    "0:01:15, ETA --:--:-- | best test ACC 93.50 (t1)")
    console = Console(record=True, width=100, color_system=None)
    console.print(progress.View("quick", snap, 75.0))
    frame = console.export_text()
    assert "16/43 tasks" in frame and "elapsed 0:01:15" in frame
    assert "trials: 2 ok, 1 running, 4 pending, 1 paused, 1 error, 1 stopped" in frame
    assert "best test ACC 93.50 (t1)" in frame


def test_plain_mode_prints_every_so_often_and_once_at_the_end(capsys, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    view = progress.SweepProgress("s", every=30, live=False)
    view.setup(total_num_samples=7)
    for seconds in (0, 10, 29, 31, 59, 62):
        clock[0] = 100.0 + seconds
        view.on_step_end(iteration=0, trials=SWEEP)
    view.close()
    view.close()  # once only
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("elapsed ")[1][:7] for line in lines] == ["0:00:00", "0:00:31", "0:01:02", "0:01:02"]


def test_the_callback_pickles_its_settings_only():
    import pickle

    view = progress.SweepProgress("s", every=5, live=False, tasks=40)
    view.on_step_end(iteration=0, trials=SWEEP)
    again = pickle.loads(pickle.dumps(view))
    assert (again.name, again.every, again.live, again.tasks) == ("s", 5, False, 40)
    assert again.view().snap == progress.Snapshot()


def test_task_lines_go_to_the_log_file_and_to_stdout_only_when_verbose(tmp_path, capsys):
    log = logging.getLogger(progress.TASK_LOGGER)
    with progress.task_log(tmp_path, verbose=False) as path:
        log.info("[t0] task 1/5: quiet")
    with progress.task_log(tmp_path, verbose=True):
        log.info("[t0] task 2/5: verbose")
    log.info("[t0] after: nowhere")
    assert capsys.readouterr().out == "[t0] task 2/5: verbose\n"
    text = path.read_text()
    assert path == tmp_path / "sweep.log" and "task 1/5: quiet" in text and "task 2/5: verbose" in text
    assert "nowhere" not in text and not log.handlers
