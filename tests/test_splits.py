"""Held-out splits on small hand-made label sets (no torch, so a mutation run of splits.py is quick): the
validation share per class, the refusals, the benchmark it leaves, and the fixed evaluation order."""

import numpy as np
import pytest

from cldst.benchmark import Benchmark
from cldst.config import ConfigError
from cldst.splits import evaluation_order, hold_out_validation, validation_indices

LABELS = np.repeat([0, 1, 2], [8, 12, 4])  # class-sorted, of unequal sizes


def test_each_class_gives_its_rounded_share_and_nothing_is_lost():
    train, val = validation_indices(LABELS, 0.25)
    assert np.bincount(LABELS[val]).tolist() == [2, 3, 1]
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(LABELS)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert train.dtype == val.dtype == np.int64


def test_the_split_is_fixed_and_each_class_draws_its_own():
    _, val = validation_indices(LABELS, 0.25)
    assert np.array_equal(val, validation_indices(LABELS, 0.25)[1])
    # class 1 alone, stored elsewhere: the same members of class 1 are held out
    alone = np.flatnonzero(LABELS == 1)
    elsewhere = np.concatenate([np.full(5, 7), LABELS[alone]])
    _, val_elsewhere = validation_indices(elsewhere, 0.25)
    assert (val_elsewhere[elsewhere[val_elsewhere] == 1] - 5).tolist() == (val[LABELS[val] == 1] - alone[0]).tolist()
    # results recorded with validation numbers were split exactly so: a new split would change all of them
    assert val.tolist() == [5, 7, 9, 11, 13, 20]


def test_no_fraction_holds_nothing_out():
    train, val = validation_indices(LABELS, 0)
    assert train.tolist() == list(range(len(LABELS))) and val.tolist() == [] and val.dtype == np.int64


@pytest.mark.parametrize(("fraction", "side", "low", "high"), [(0.1, "validation", 0.25, 0.75),
                                                                (0.9, "training", 0.25, 0.75)])
def test_a_fraction_that_empties_a_side_of_a_class_names_it(fraction, side, low, high):
    with pytest.raises(ConfigError) as err:
        validation_indices(LABELS, fraction)
    assert str(err.value) == (f"val_fraction: {fraction:g} leaves class 2 (4 training images) with no {side} image; "
                              f"use a fraction in [{low:.3g}, {high:.3g}] or 0 for no validation split")


def test_the_validation_benchmark_holds_the_held_out_training_images():
    images = np.arange(len(LABELS), dtype=np.uint8).reshape(-1, 1, 1, 1)
    bench = Benchmark("synthetic", images, LABELS, images[:3], LABELS[:3], 3, (0.5,), (0.25,), 0, False)
    assert hold_out_validation(bench, 0.0) == (bench, None)
    kept, held = hold_out_validation(bench, 0.25)
    train, val = validation_indices(LABELS, 0.25)
    assert kept.train_x.ravel().tolist() == train.tolist() and kept.train_y.tolist() == LABELS[train].tolist()
    assert held.test_x.ravel().tolist() == val.tolist() and held.test_y.tolist() == LABELS[val].tolist()
    assert kept.test_x is bench.test_x and held.train_x is bench.train_x  # the rest as it was


def test_the_evaluation_order_is_a_fixed_shuffle_per_seed_and_task():
    order = evaluation_order(50, 0, 1)
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != list(range(50))
    assert np.array_equal(order, evaluation_order(50, 0, 1))
    assert not np.array_equal(order, evaluation_order(50, 0, 2))
    assert not np.array_equal(order, evaluation_order(50, 1, 1))
    # pinned: R[i][j] of recorded runs was measured in this order
    assert evaluation_order(6, 0, 0).tolist() == [1, 4, 5, 3, 2, 0]
