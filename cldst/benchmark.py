"""The in-memory form every loader returns (uint8 arrays (N, H, W, C) plus labels and
normalisation), and DataError, the one error a loader raises.

Its own module so that the loaders (cldst.data, cldst.idx, cldst.imagefolders) can all build on it
without importing one another; cldst.data re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DataError(RuntimeError):
    """Data missing or unusable; the one-line message says which file to put where, or what is wrong."""


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == and hash are meaningless on arrays
class Benchmark:
    name: str
    train_x: np.ndarray  # (N, H, W, C) uint8
    train_y: np.ndarray  # (N,) int64 in 0..num_classes-1
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]  # per channel, pixel/255 units, from train
    std: tuple[float, ...]
    crop_padding: int  # train-time random-crop padding
    flip: bool  # train-time horizontal flip

    @property
    def channels(self) -> int:
        return self.train_x.shape[3]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[1]


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # A 256-bin histogram per channel gives exact mean/std without a float copy of the whole set.
    values = np.arange(256) / 255.0
    means, stds = [], []
    for c in range(x.shape[-1]):
        p = np.bincount(x[..., c].ravel(), minlength=256) / (x.size // x.shape[-1])
        mean = float(p @ values)
        means.append(mean)
        stds.append(float(np.sqrt(p @ (values - mean) ** 2)))
    return tuple(means), tuple(stds)


def make_benchmark(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                   num_classes: int, crop_padding: int, flip: bool) -> Benchmark:
    """A Benchmark from (images, labels) pairs, with mean/std measured on the training images."""
    mean, std = _channel_stats(train[0])
    return Benchmark(name, train[0], np.asarray(train[1], np.int64), test[0], np.asarray(test[1], np.int64),
                     num_classes, mean, std, crop_padding, flip)
