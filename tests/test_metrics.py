"""Metric formulas on a hand-made accuracy matrix."""

import math

import numpy as np
import pytest

from cldst import metrics

# R[i][j]: accuracy on task j after task i (three tasks); F[i]: task i's subnetwork on later tasks.
R = [[90.0], [80.0, 70.0], [60.0, 65.0, 50.0]]
F = [[20.0, 30.0], [40.0], []]


def test_final_accuracy_is_the_mean_of_the_last_row():
    assert metrics.final_accuracy(R) == pytest.approx((60 + 65 + 50) / 3)


def test_bwt_compares_each_task_with_just_after_learning_it():
    assert metrics.bwt_after(R, 0) == 0.0
    assert metrics.bwt_after(R, 1) == pytest.approx(80 - 90)
    assert metrics.bwt_after(R, 2) == pytest.approx(((60 - 90) + (65 - 70)) / 2)


def test_incremental_accuracy_averages_the_last_row_prefixes():
    assert metrics.incremental_accuracy(R) == pytest.approx([60, 62.5, 175 / 3])


def test_forward_transfer_averages_per_task_means():
    assert metrics.forward_transfer(F) == pytest.approx((25 + 40) / 2)
    assert math.isnan(metrics.forward_transfer([[]]))


def test_full_matrix_has_r_below_and_f_above_the_diagonal():
    matrix = metrics.full_matrix(R, F)
    assert matrix.tolist() == [[90, 20, 30], [80, 70, 40], [60, 65, 50]]


def same(matrix, expected) -> bool:
    return np.array_equal(matrix, np.array(expected, dtype=float), equal_nan=True)


def test_full_matrix_leaves_what_is_not_known_nan():
    nan = math.nan
    assert same(metrics.full_matrix(R), [[90, nan, nan], [80, 70, nan], [60, 65, 50]])
    assert same(metrics.full_matrix(R, F[:1]), [[90, 20, 30], [80, 70, nan], [60, 65, 50]])  # fewer F rows
    assert same(metrics.full_matrix(R, [[20.0], [], []]), [[90, 20, nan], [80, 70, nan], [60, 65, 50]])  # short row
    # a run of 4 tasks stopped after task 1: F rows reach past the matrix, which keeps only what fits
    assert same(metrics.full_matrix(R[:2], [[20.0, 30.0, 35.0], [40.0, 45.0]]), [[90, 20], [80, 70]])


def test_summary_holds_every_run_level_metric():
    assert metrics.summary(R, F) == {
        "acc_matrix": R,
        "acc": pytest.approx((60 + 65 + 50) / 3),
        "bwt": pytest.approx(((60 - 90) + (65 - 70)) / 2),
        "fwt": pytest.approx((25 + 40) / 2),
        "incremental_acc": pytest.approx([60, 62.5, 175 / 3]),
    }


def test_ragged_rows_are_refused():
    with pytest.raises(ValueError, match=r"^accuracy row 1 has 1 entries, expected 2$"):
        metrics.final_accuracy([[1.0], [1.0]])
