"""Metric formulas on a hand-made accuracy matrix."""

import math

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


def test_ragged_rows_are_refused():
    with pytest.raises(ValueError, match="row 1"):
        metrics.final_accuracy([[1.0], [1.0]])
