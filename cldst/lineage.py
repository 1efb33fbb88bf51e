"""The model a trial ended with, traced back through population-based exploits, from tasks rows alone.

Under population-based training a trial may continue from another trial's checkpoint: its next tasks row
records that trial as `parent_trial_id`. The trial's own row of the task before then describes a model it threw
away (`discarded`); the model it kept learned its earlier tasks in the parent (and, recursively, in the parent's
parents).
This module imports no torch and no ray: the driver's callback and `analysis/` both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class LineageError(ValueError):
    """The tasks rows do not hold a complete line back to task 0."""


def by_trial(rows: Iterable[dict]) -> dict[str, dict[int, dict]]:
    """tasks rows -> {trial_id: {task: row}}."""
    out: dict[str, dict[int, dict]] = {}
    for row in rows:
        out.setdefault(row["trial_id"], {})[int(row["task"])] = row
    return out


def lineage(rows_of: Callable[[str], dict[int, dict]], trial_id: str) -> list[dict]:
    """The tasks rows of the model `trial_id` ended with, one per task from 0, each from the trial that
    learned that task for this model. `rows_of(trial)` gives a trial's rows as {task: row}.

    Walking back from the trial's last task it did not discard (a member exploited and then stopped holds the
    donor's model of that task, which no row names): a row whose `parent_trial_id` is set started from the
    parent's checkpoint after the task before, so the earlier tasks come from the parent's rows. A discarded row
    met on the way means the rows contradict each other.
    """
    cache: dict[str, dict[int, dict]] = {}

    def rows(trial: str) -> dict[int, dict]:
        if trial not in cache:
            cache[trial] = rows_of(trial)
        return cache[trial]

    kept = [task for task, row in rows(trial_id).items() if not row.get("discarded")]
    if not kept:
        return []
    chain, trial, task, seen = [], trial_id, max(kept), set()
    while task >= 0:
        row = rows(trial).get(task)
        if row is None:
            raise LineageError(f"trial {trial}: no tasks row for task {task} (needed by the lineage of {trial_id})")
        if row.get("discarded"):
            raise LineageError(f"trial {trial}: its row for task {task} is discarded, yet the lineage of {trial_id} "
                               f"builds on it")
        chain.append(row)
        parent = row.get("parent_trial_id")
        if isinstance(parent, str) and parent:  # None, or NaN from pandas: its own
            if (parent, task) in seen:
                raise LineageError(f"trial {trial_id}: its lineage loops at trial {parent}, task {task}")
            seen.add((parent, task))
            trial = parent
        task -= 1
    return chain[::-1]
