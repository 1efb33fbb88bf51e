"""Benchmarks as uint8 arrays (N, H, W, C), loaded once, and the class/task splits over them.

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
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct


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


def _benchmark(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
               num_classes: int, crop_padding: int, flip: bool) -> Benchmark:
    mean, std = _channel_stats(train[0])
    return Benchmark(name, train[0], np.asarray(train[1], np.int64), test[0], np.asarray(test[1], np.int64),
                     num_classes, mean, std, crop_padding, flip)


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

    return _benchmark(name, stack(spec.train), stack(spec.test), spec.num_classes, crop_padding=4, flip=True)


# ---------------------------------------------------------------- miniImageNet (Kaggle zip of class folders)

_MINI_ZIP, _MINI_DIR, _MINI_CACHE = "miniImageNet100.zip", "miniImageNet100", "miniImageNet100.cache-32.npz"
_MINI_ZIP_README = "miniImageNet.zip"  # the name the reference's README tells users to give the Kaggle zip
_MINI_SIZE = 32
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _class_files(names: list[str]) -> dict[str, list[str]]:
    # A class is the folder an image sits in, so "<class>/x.jpg" and "<top>/<class>/x.jpg" both work.
    by_class: dict[str, list[str]] = {}
    for name in sorted(names):
        parts = PurePosixPath(name).parts
        hidden = any(p.startswith((".", "__MACOSX")) for p in parts)
        if len(parts) >= 2 and not hidden and name.lower().endswith(_IMAGE_SUFFIXES):
            by_class.setdefault(parts[-2], []).append(name)
    return dict(sorted(by_class.items()))


def _decode_image(raw: bytes, source: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            rgb = image.convert("RGB").resize((_MINI_SIZE, _MINI_SIZE), Image.BILINEAR)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot decode image {source} ({e})") from e
    return np.asarray(rgb, dtype=np.uint8)


def _decode_miniimagenet(source: Path) -> dict[str, np.ndarray]:
    if source.is_dir():
        by_class = _class_files([p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()])
        images = [_decode_image((source / n).read_bytes(), str(source / n)) for f in by_class.values() for n in f]
    else:
        try:
            with zipfile.ZipFile(source) as zf:
                by_class = _class_files([i.filename for i in zf.infolist() if not i.is_dir()])
                images = [_decode_image(zf.read(n), f"{source}:{n}") for f in by_class.values() for n in f]
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(f"{source} is truncated or corrupt ({e}); download it again") from e
    if len(by_class) < 2:
        raise DataError(f"{source} holds no class folders of images (<class>/*.jpg or <top>/<class>/*.jpg)")
    sizes = [len(files) for files in by_class.values()]
    x, y = np.stack(images), np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    # Held-out split: seeded, 100 per class (fewer for a small class), chosen here rather than by moving
    # the user's files as the reference does.
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), dtype=bool)
    for start, n in zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True):
        test[start + rng.permutation(n)[: min(100, n // 5)]] = True
    return {"train_x": x[~test], "train_y": y[~test], "test_x": x[test], "test_y": y[test],
            "classes": np.asarray(list(by_class))}


def _newest_mtime(source: Path) -> float:
    return max(p.stat().st_mtime for p in [source, *source.rglob("*")]) if source.is_dir() else source.stat().st_mtime


def _read_cache(cache: Path, source: Path) -> dict[str, np.ndarray] | None:
    if not cache.is_file() or cache.stat().st_mtime < _newest_mtime(source):
        return None
    try:
        with np.load(cache) as npz:
            return {k: npz[k] for k in ("train_x", "train_y", "test_x", "test_y", "classes")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # unreadable cache: rebuild it
        return None


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    # temp file + os.replace, so a crash or a concurrent reader never sees half a cache
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)
    except OSError as e:  # e.g. a read-only data mount: the arrays are still good, only the cache is lost
        Path(tmp).unlink(missing_ok=True)
        print(f"warning: could not write the cache {cache} ({e})", file=sys.stderr)


def _load_miniimagenet(root: Path) -> Benchmark:
    folder, archive, cache = root / _MINI_DIR, root / _MINI_ZIP, root / _MINI_CACHE
    archives = [a for a in (archive, root / _MINI_ZIP_README) if a.is_file()]
    source = folder if folder.is_dir() else archives[0] if archives else None
    if source is None:
        raise DataError(f"miniimagenet not found: put the Kaggle archive at {archive} (or {_MINI_ZIP_README}), "
                        f"or its extracted class folders "
                        f"as {folder}/<class>/*.jpg")
    arrays = _read_cache(cache, source)
    if arrays is None:
        print(f"decoding {source} to {_MINI_SIZE}x{_MINI_SIZE} once; cached in {cache}", file=sys.stderr)
        arrays = _decode_miniimagenet(source)
        _write_cache(cache, arrays)
    return _benchmark("miniimagenet", (arrays["train_x"], arrays["train_y"]), (arrays["test_x"], arrays["test_y"]),
                      len(arrays["classes"]), crop_padding=4, flip=True)


# ---------------------------------------------------------------- built-in small benchmarks

def _load_digits(root: Path) -> Benchmark:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]  # 0..16 grey levels -> 0..255
    y = digits.target
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    return _benchmark("digits", (x[train], y[train]), (x[test], y[test]), 10, crop_padding=1, flip=False)


def _load_synthetic(root: Path) -> Benchmark:
    # Fixed random prototypes plus heavy noise: about 88% for a nearest-centroid rule over 10 classes,
    # so a small MLP learns it in an epoch or two without it being trivially perfect.
    rng = np.random.default_rng(0)
    prototypes = rng.uniform(0, 255, size=(10, 8, 8, 1))

    def sample(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), per_class)
        x = prototypes[y] + rng.normal(0, 180, size=(len(y), 8, 8, 1))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    return _benchmark("synthetic", sample(120), sample(40), 10, crop_padding=0, flip=False)


_LOADERS: dict[str, Callable[[Path], Benchmark]] = {
    "cifar10": lambda root: _load_cifar("cifar10", root),
    "cifar100": lambda root: _load_cifar("cifar100", root),
    "miniimagenet": _load_miniimagenet,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
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
        raise DataError(f"cannot download {name!r}: only {', '.join(DOWNLOADABLE)} can be downloaded; for "
                        f"miniimagenet put the Kaggle {_MINI_ZIP} (or its extracted {_MINI_DIR}/ folder) in {root}; "
                        "digits and synthetic are built in")
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
