"""Benchmarks as uint8 arrays (N, H, W, C), loaded once, and the class/task splits over them.

Here: the registry of benchmarks, CIFAR (official python archives, and their download) and the
built-in ones. MNIST-style IDX files are read in cldst.idx, image folders (miniImageNet,
Tiny-ImageNet) in cldst.imagefolders; Benchmark and DataError live in cldst.benchmark.

Everything here is numpy: the arrays are shipped once through Ray's object store and moved to
the device by the training loop, which does augmentation and normalisation there. Tasks are
label splits: after `select_classes`, task t holds labels [t*cpt, (t+1)*cpt).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import pickle
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cldst import idx, imagefolders
from cldst.benchmark import Benchmark, DataError, make_benchmark

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct


# ---------------------------------------------------------------- CIFAR (official python pickles)

@dataclass(frozen=True)
class _Cifar:
    archive: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int
    md5: str


_CIFAR = {
    "cifar10": _Cifar("cifar-10-python.tar.gz", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                      ("test_batch",), b"labels", 10, "c58f30108f718f92721af3b95e74349a"),
    "cifar100": _Cifar("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), b"fine_labels", 100,
                       "eb9058c3a382ffc7106e4002c42a8d85"),
}
DOWNLOADABLE: tuple[str, ...] = tuple(_CIFAR)

# The only globals a CIFAR pickle holds: numpy array reconstruction (under its numpy 1 and 2 module names)
# and plain builtin containers (Python 2 wrote builtins as __builtin__).
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(module, t.__name__): t for module in ("builtins", "__builtin__")
       for t in (dict, list, tuple, set, frozenset, bytes, bytearray, str, int, float, bool)},
}


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the globals in _PICKLE_GLOBALS, so a crafted pickle cannot run code."""

    def __init__(self, raw: bytes, source: str):
        super().__init__(io.BytesIO(raw), encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> object:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(f"refusing to load {self.source}: the pickle asks for {module}.{name}, "
                            "which a CIFAR archive never holds") from None


def _parse_batch(raw: bytes, source: str, spec: _Cifar) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _CifarUnpickler(raw, source).load()
    except DataError:
        raise
    except Exception as e:  # a corrupt pickle fails in many ways (UnpicklingError, EOFError, ValueError, ...)
        raise DataError(f"{source} is not a readable CIFAR batch ({type(e).__name__}: {e})") from e
    data = batch.get(b"data") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise DataError(f"{source} is not a CIFAR batch: it lacks a uint8 b'data' array of shape (N, 3072)")
    labels = np.asarray(batch.get(spec.label_key, []))
    labels_ok = labels.shape == (len(data),) and np.issubdtype(labels.dtype, np.integer)
    if not labels_ok or (labels.size and not 0 <= labels.min() <= labels.max() < spec.num_classes):
        raise DataError(f"{source} is not a CIFAR batch: {spec.label_key!r} is not {len(data)} labels "
                        f"in 0..{spec.num_classes - 1}")
    # Rows are channel-major (3 planes of 32x32, row-major); we store (N, H, W, C).
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_tar_members(archive: Path, folder: str, members: tuple[str, ...]) -> dict[str, bytes]:
    wanted = {f"{folder}/{m}": m for m in members}
    found = {}
    try:
        with tarfile.open(archive, "r|gz") as tar:  # one streaming pass, nothing extracted to disk
            for info in tar:
                if info.name in wanted and info.isfile():
                    found[wanted[info.name]] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive} is truncated or corrupt ({e}); delete it and download it again") from e
    missing = [f"{folder}/{m}" for m in members if m not in found]
    if missing:
        raise DataError(f"{archive} is not the expected archive: it lacks {', '.join(missing)}")
    return found


def _load_cifar(name: str, root: Path) -> Benchmark:
    spec = _CIFAR[name]
    folder, archive = root / spec.folder, root / spec.archive
    members = spec.train + spec.test
    if folder.is_dir():
        missing = [str(folder / m) for m in members if not (folder / m).is_file()]
        if missing:
            raise DataError(f"{', '.join(missing)} missing: re-extract {spec.archive} into {root}")
        batches = {m: _parse_batch((folder / m).read_bytes(), str(folder / m), spec) for m in members}
    elif archive.is_file():
        raw = _read_tar_members(archive, spec.folder, members)  # popped below: each pickle freed once parsed
        batches = {m: _parse_batch(raw.pop(m), f"{archive}:{spec.folder}/{m}", spec) for m in members}
    else:
        raise DataError(f"{name} not found: put {archive} (or its extracted folder {folder}/) there, "
                        f"or run `cldst data download {name}`")

    def stack(split: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate([batches[m][0] for m in split]), np.concatenate([batches[m][1] for m in split]))

    return make_benchmark(name, stack(spec.train), stack(spec.test), spec.num_classes, crop_padding=4, flip=True)


# ---------------------------------------------------------------- built-in small benchmarks

def _load_digits(root: Path) -> Benchmark:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]  # 0..16 grey levels -> 0..255
    y = digits.target
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    return make_benchmark("digits", (x[train], y[train]), (x[test], y[test]), 10, crop_padding=1, flip=False)


def _load_synthetic(root: Path) -> Benchmark:
    # Fixed random prototypes plus heavy noise: about 88% for a nearest-centroid rule over 10 classes,
    # so a small MLP learns it in an epoch or two without it being trivially perfect.
    rng = np.random.default_rng(0)
    prototypes = rng.uniform(0, 255, size=(10, 8, 8, 1))

    def sample(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), per_class)
        x = prototypes[y] + rng.normal(0, 180, size=(len(y), 8, 8, 1))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    return make_benchmark("synthetic", sample(120), sample(40), 10, crop_padding=0, flip=False)


_LOADERS: dict[str, Callable[[Path], Benchmark]] = {
    "cifar10": partial(_load_cifar, "cifar10"),
    "cifar100": partial(_load_cifar, "cifar100"),
    "miniimagenet": imagefolders.load_miniimagenet,
    "tinyimagenet": imagefolders.load_tinyimagenet,
    **{name: partial(idx.load, name) for name in idx.FOLDERS},
    "digits": _load_digits,
    "synthetic": _load_synthetic,
}
# What to put under the data root for the benchmarks that cannot be downloaded and are not built in.
_WHERE: dict[str, Callable[[Path], str]] = {
    "miniimagenet": imagefolders.where_miniimagenet,
    "tinyimagenet": imagefolders.where_tinyimagenet,
    **{name: partial(idx.where, name) for name in idx.FOLDERS},
}


def load_benchmark(name: str, root: str | os.PathLike = "./data") -> Benchmark:
    """Load a benchmark by its canonical name; raises DataError saying what to put where when data is missing."""
    if name not in _LOADERS:
        raise DataError(f"unknown benchmark {name!r}; known: {', '.join(_LOADERS)}")
    return _LOADERS[name](Path(root).expanduser())


def select_classes(bench: Benchmark, num_classes: int, class_order_seed: int | None) -> Benchmark:
    """Keep the first num_classes classes of the class order, relabelled 0..num_classes-1 in that order.

    None keeps label order (the reference's); an int applies a seeded permutation. mean/std stay the
    whole benchmark's: normalisation is a property of the data set, not of the chosen classes.
    """
    if not 1 <= num_classes <= bench.num_classes:
        raise ValueError(f"num_classes must be in 1..{bench.num_classes} for {bench.name}, got {num_classes}")
    if class_order_seed is None and num_classes == bench.num_classes:
        return bench
    order = np.arange(bench.num_classes)
    if class_order_seed is not None:
        order = np.random.default_rng(class_order_seed).permutation(bench.num_classes)
    new_label = np.full(bench.num_classes, -1, dtype=np.int64)
    new_label[order[:num_classes]] = np.arange(num_classes)

    def relabel(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = new_label[y]
        kept = y >= 0
        return (x, y) if kept.all() else (x[kept], y[kept])  # all kept: no copy of the images

    train_x, train_y = relabel(bench.train_x, bench.train_y)
    test_x, test_y = relabel(bench.test_x, bench.test_y)
    return replace(bench, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, num_classes=num_classes)


def task_indices(labels: np.ndarray, task: int, classes_per_task: int) -> np.ndarray:
    """int64 indices of the samples whose label lies in task's classes [task*cpt, (task+1)*cpt)."""
    if task < 0 or classes_per_task < 1:
        raise ValueError(f"need task >= 0 and classes_per_task >= 1, got {task}, {classes_per_task}")
    low = task * classes_per_task
    return np.flatnonzero((labels >= low) & (labels < low + classes_per_task)).astype(np.int64)


# ---------------------------------------------------------------- download (CIFAR only)

def download(name: str, root: str | os.PathLike) -> Path:
    """Fetch the official CIFAR archive into root (md5-checked, written atomically); returns its path."""
    root = Path(root).expanduser()
    if name not in _CIFAR:
        hint = _WHERE[name](root) if name in _WHERE else "digits and synthetic are built in"
        raise DataError(f"cannot download {name!r}: only {', '.join(DOWNLOADABLE)} can be downloaded; {hint}")
    spec = _CIFAR[name]
    final = root / spec.archive
    url = f"https://www.cs.toronto.edu/~kriz/{spec.archive}"
    if final.is_file():
        print(f"{final} already present", file=sys.stderr)
        return final
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=spec.archive, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            digest = _copy_with_progress(response, out, spec.archive)
        if digest != spec.md5:
            raise DataError(f"{url} arrived with md5 {digest}, expected {spec.md5}; try again, or download it "
                            f"by hand and put it at {final}")
        os.replace(tmp, final)
    except (OSError, http.client.HTTPException) as e:  # urllib.error.URLError is an OSError
        raise DataError(f"could not download {url} ({e}); download it by hand and put it at {final}") from e
    finally:
        Path(tmp).unlink(missing_ok=True)
    return final


def _copy_with_progress(response: http.client.HTTPResponse, out: BinaryIO, label: str) -> str:
    total = int(response.headers.get("Content-Length") or 0)
    of_total = f" of {total >> 20}" if total else ""
    md5 = hashlib.md5(usedforsecurity=False)
    done = 0
    while chunk := response.read(1 << 20):
        out.write(chunk)
        md5.update(chunk)
        done += len(chunk)
        print(f"\r{label}: {done >> 20}{of_total} MiB", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return md5.hexdigest()
