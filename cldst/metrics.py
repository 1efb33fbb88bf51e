"""Continual-learning metrics from the accuracy matrix (docs/design.md, "Metrics").

R[i][j] = accuracy (%) on task j's test set after learning task i, for j <= i: rows are
lower-triangular (row i has i+1 entries). The reference's forward transfer uses the
upper triangle instead: F[i][j] for j > i is task i's subnetwork and head on task j's
test set (labels mapped onto task i's head); `fwt_rows[i]` holds F[i][i+1:].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Rows = Sequence[Sequence[float]]


def _check_rows(acc_rows: Rows) -> None:
    for i, row in enumerate(acc_rows):
        if len(row) != i + 1:
            raise ValueError(f"accuracy row {i} has {len(row)} entries, expected {i + 1}")


def bwt_after(acc_rows: Rows, task: int) -> float:
    """Backward transfer after learning `task`: mean_{j<task} (R[task][j] - R[j][j]); 0 after task 0."""
    _check_rows(acc_rows)
    if task == 0:
        return 0.0
    return float(np.mean([acc_rows[task][j] - acc_rows[j][j] for j in range(task)]))


def average_accuracy(row: Sequence[float]) -> float:
    """Mean accuracy over the tasks seen so far (one row of R)."""
    return float(np.mean(row))


def final_accuracy(acc_rows: Rows) -> float:
    """ACC = mean_j R[T-1][j]."""
    _check_rows(acc_rows)
    return average_accuracy(acc_rows[-1])


def incremental_accuracy(acc_rows: Rows) -> list[float]:
    """Entry i = mean_{j<=i} R[T-1][j], as the reference prints it."""
    _check_rows(acc_rows)
    last = np.asarray(acc_rows[-1], dtype=float)
    return [float(last[: i + 1].mean()) for i in range(len(last))]


def forward_transfer(fwt_rows: Rows) -> float:
    """The reference's FWT: per task i < T-1, mean_{j>i} F[i][j]; then the mean over those i.

    NaN when there is a single task (no later task to transfer to).
    """
    per_task = [float(np.mean(row)) for row in fwt_rows if len(row) > 0]
    return float(np.mean(per_task)) if per_task else float("nan")


def full_matrix(acc_rows: Rows, fwt_rows: Rows | None = None) -> np.ndarray:
    """The T x T matrix as the reference prints it: R below and on the diagonal, F above (NaN if absent)."""
    _check_rows(acc_rows)
    size = len(acc_rows)
    matrix = np.full((size, size), np.nan)
    for i, row in enumerate(acc_rows):
        matrix[i, : i + 1] = row
        if fwt_rows is not None and i < len(fwt_rows):
            later = fwt_rows[i][: size - i - 1]
            matrix[i, i + 1 : i + 1 + len(later)] = later
    return matrix


def summary(acc_rows: Rows, fwt_rows: Rows) -> dict:
    """The run-level metrics of docs/design.md from the accuracy rows and forward-transfer rows."""
    return {
        "acc_matrix": [list(row) for row in acc_rows],
        "acc": final_accuracy(acc_rows),
        "bwt": bwt_after(acc_rows, len(acc_rows) - 1),
        "fwt": forward_transfer(fwt_rows),
        "incremental_acc": incremental_accuracy(acc_rows),
    }
