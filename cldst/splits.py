"""Held-out evaluation splits: the validation share of the training images, and a fixed evaluation order.

Validation (`val_fraction`) is a stratified share of every class's training images, drawn with a
seed of its own and per class, so it is the same for every trial of a sweep whatever their run
seeds or class orders: configurations are compared on the same images. Model selection reads it;
test data stays for the tables.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cldst.config import ConfigError
from cldst.data import Benchmark

SPLIT_SEED = 0x5EED  # fixed: the validation images do not depend on any run's seed


def validation_indices(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices into `labels`: round(fraction * n_c) of each class c held out.

    Raises ConfigError (naming val_fraction) when a class would have no training or no validation image.
    """
    if fraction == 0:
        return np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_val = round(fraction * len(members))
        if n_val == 0 or n_val == len(members):
            side = "validation" if n_val == 0 else "training"
            raise ConfigError(f"val_fraction: {fraction:g} leaves class {label} ({len(members)} training images) "
                              f"with no {side} image; use a fraction in [{1 / len(members):.3g}, "
                              f"{1 - 1 / len(members):.3g}] or 0 for no validation split")
        rng = np.random.default_rng([SPLIT_SEED, int(label)])
        held_out.append(rng.permutation(members)[:n_val])
    val = np.sort(np.concatenate(held_out)).astype(np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val).astype(np.int64)
    return train, val


def hold_out_validation(bench: Benchmark, fraction: float) -> tuple[Benchmark, Benchmark | None]:
    """(the benchmark without its validation images, a benchmark whose test set is the validation set)."""
    if fraction == 0:
        return bench, None
    train, val = validation_indices(bench.train_y, fraction)
    as_test = replace(bench, test_x=bench.train_x[val], test_y=bench.train_y[val])
    return replace(bench, train_x=bench.train_x[train], train_y=bench.train_y[train]), as_test


def evaluation_order(n: int, seed: int, task: int) -> np.ndarray:
    """A fixed, seeded shuffle of one task's evaluation set: batch-statistics BatchNorm must never see a
    class-sorted batch, and the same order every time keeps R[i][j] exactly constant under isolation."""
    return np.random.default_rng([seed, task, 1]).permutation(n)
