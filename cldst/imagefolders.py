"""Benchmarks stored as image files, decoded once with Pillow and cached: miniImageNet (the Kaggle
zip of class folders) and Tiny-ImageNet (the official tiny-imagenet-200 folder or zip).

Both are read from the folder or straight from the zip; nothing is extracted, moved or renamed. The
decoded arrays are cached in an `.npz` beside the source: written to a temp file and renamed into
place, read back with allow_pickle=False, rebuilt when any source file is newer than the cache.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np

from cldst.benchmark import Benchmark, DataError, make_benchmark

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y", "classes")

MINI_ZIP, MINI_DIR = "miniImageNet100.zip", "miniImageNet100"
_MINI_ZIP_README = "miniImageNet.zip"  # the name the reference's README tells users to give the Kaggle zip
MINI_SIZE = 32  # as the reference resizes it
TINY_ZIP, TINY_DIR = "tiny-imagenet-200.zip", "tiny-imagenet-200"
TINY_SIZE = 64  # native, as the reference uses it


# ---------------------------------------------------------------- reading, decoding, caching

class _Files:
    """The files of a folder or a zip archive, named by their posix path inside it (a context manager)."""

    def __init__(self, source: Path):
        self.source, self._zip = source, None
        if source.is_dir():
            self.names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
            return
        try:
            self._zip = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(f"{source} is truncated or corrupt ({e}); download it again") from e
        self.names = sorted(i.filename for i in self._zip.infolist() if not i.is_dir())

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()

    def label(self, name: str) -> str:
        return str(self.source / name) if self._zip is None else f"{self.source}:{name}"

    def read(self, name: str) -> bytes:
        try:
            return (self.source / name).read_bytes() if self._zip is None else self._zip.read(name)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:  # a bad CRC or a cut-off member
            raise DataError(f"cannot read {self.label(name)} ({e}); the source is truncated or corrupt, "
                            "download it again") from e


def _is_image(name: str) -> bool:
    parts = PurePosixPath(name).parts
    hidden = any(p.startswith((".", "__MACOSX")) for p in parts)
    return not hidden and name.lower().endswith(_IMAGE_SUFFIXES)


def _decode_image(raw: bytes, source: str, size: int) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            rgb = image.convert("RGB")
            if rgb.size != (size, size):
                # the centre square, resized: the reference resizes the short side to `size` and crops a random
                # size x size window (train and test); for square images both are the same resize
                rgb = ImageOps.fit(rgb, (size, size), Image.BILINEAR)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot decode image {source} ({e}); replace it, or download the data set again") from e
    return np.asarray(rgb, dtype=np.uint8)


def _decode_images(files: _Files, names: list[str], size: int) -> np.ndarray:
    x = np.empty((len(names), size, size, 3), dtype=np.uint8)  # filled in place: no list of 100k arrays to stack
    for i, name in enumerate(names):
        x[i] = _decode_image(files.read(name), files.label(name), size)
    return x


def _newest_mtime(source: Path) -> float:
    return max(p.stat().st_mtime for p in [source, *source.rglob("*")]) if source.is_dir() else source.stat().st_mtime


def _read_cache(cache: Path, source: Path) -> dict[str, np.ndarray] | None:
    if not cache.is_file() or cache.stat().st_mtime < _newest_mtime(source):
        return None
    try:
        with np.load(cache, allow_pickle=False) as npz:
            return {k: npz[k] for k in _CACHE_KEYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # unreadable cache: rebuild it
        return None


def _write_cache(cache: Path, arrays: dict[str, np.ndarray], source: Path) -> None:
    # temp file + os.replace, so a crash or a concurrent reader never sees half a cache
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        # mkstemp makes it owner-only; whoever may read the source may read its decoded copy
        os.chmod(tmp, stat.S_IMODE(source.stat().st_mode) & 0o666)
        os.replace(tmp, cache)
    except OSError as e:  # e.g. a read-only data mount: the arrays are still good, only the cache is lost
        Path(tmp).unlink(missing_ok=True)
        print(f"warning: could not write the cache {cache} ({e})", file=sys.stderr)


def _cached(source: Path, cache: Path, decode: Callable[[Path], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    arrays = _read_cache(cache, source)
    if arrays is None:
        print(f"decoding {source} once; cached in {cache}", file=sys.stderr)
        arrays = decode(source)
        _write_cache(cache, arrays, source)
    return arrays


def _as_benchmark(name: str, arrays: dict[str, np.ndarray]) -> Benchmark:
    # Both augment as the reference's loader asks: random crop with padding 4 and horizontal flip.
    return make_benchmark(name, (arrays["train_x"], arrays["train_y"]), (arrays["test_x"], arrays["test_y"]),
                          len(arrays["classes"]), crop_padding=4, flip=True)


# ---------------------------------------------------------------- miniImageNet (Kaggle zip of class folders)

def _class_files(names: list[str]) -> dict[str, list[str]]:
    # A class is the folder an image sits in, so "<class>/x.jpg" and "<top>/<class>/x.jpg" both work.
    by_class: dict[str, list[str]] = {}
    for name in sorted(names):
        parts = PurePosixPath(name).parts
        if len(parts) >= 2 and _is_image(name):
            by_class.setdefault(parts[-2], []).append(name)
    return dict(sorted(by_class.items()))


def _decode_miniimagenet(source: Path) -> dict[str, np.ndarray]:
    with _Files(source) as files:
        by_class = _class_files(files.names)
        if len(by_class) < 2:
            raise DataError(f"{source} holds no class folders of images (<class>/*.jpg or <top>/<class>/*.jpg)")
        x = _decode_images(files, [name for names in by_class.values() for name in names], MINI_SIZE)
    sizes = [len(names) for names in by_class.values()]
    y = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    # Held-out split: seeded, 100 per class (fewer for a small class), chosen here rather than by moving
    # the user's files as the reference does.
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), dtype=bool)
    for start, n in zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True):
        test[start + rng.permutation(n)[: min(100, n // 5)]] = True
    return {"train_x": x[~test], "train_y": y[~test], "test_x": x[test], "test_y": y[test],
            "classes": np.asarray(list(by_class))}


def load_miniimagenet(root: Path) -> Benchmark:
    folder, archive = root / MINI_DIR, root / MINI_ZIP
    archives = [a for a in (archive, root / _MINI_ZIP_README) if a.is_file()]
    source = folder if folder.is_dir() else archives[0] if archives else None
    if source is None:
        raise DataError(f"miniimagenet not found: {where_miniimagenet(root)}")
    cache = root / f"{MINI_DIR}.cache-{MINI_SIZE}-centre.npz"  # -centre: centre-cropped, not squashed
    return _as_benchmark("miniimagenet", _cached(source, cache, _decode_miniimagenet))


def where_miniimagenet(root: Path) -> str:
    return (f"put the Kaggle archive at {root / MINI_ZIP} (or {_MINI_ZIP_README}), "
            f"or its extracted class folders as {root / MINI_DIR}/<class>/*.jpg")


# ---------------------------------------------------------------- Tiny-ImageNet (official folder or zip)

def _tiny_top(files: _Files) -> str:
    """The folder inside the source that holds wnids.txt: '' or e.g. 'tiny-imagenet-200/'."""
    tops = [n[: -len("wnids.txt")] for n in files.names if PurePosixPath(n).name == "wnids.txt"]
    if not tops:
        raise DataError(f"{files.source} lacks wnids.txt: it is not the tiny-imagenet-200 archive or folder")
    return min(tops, key=len)


def _class_images(files: _Files, top: str, split: str, label: dict[str, int]) -> list[tuple[int, str]]:
    """(label, name) of the images at <top><split>/<wnid>/images/<file>, sorted."""
    found = []
    for name in files.names:
        parts = PurePosixPath(name[len(top):]).parts if name.startswith(top) else ()
        if len(parts) == 4 and parts[0] == split and parts[2] == "images" and _is_image(name):
            if parts[1] not in label:
                raise DataError(f"{files.label(name)} is an image of class {parts[1]}, "
                                f"which {top}wnids.txt does not list")
            found.append((label[parts[1]], name))
    return sorted(found)


def _tiny_train(files: _Files, top: str, label: dict[str, int]) -> list[tuple[int, str]]:
    found = _class_images(files, top, "train", label)
    seen = {y for y, _ in found}
    empty = [wnid for wnid, y in label.items() if y not in seen]
    if empty:
        more = f" (and {len(empty) - 1} more classes)" if len(empty) > 1 else ""
        raise DataError(f"{files.source} has no training images for {empty[0]}{more}: "
                        f"expected {top}train/<wnid>/images/*.JPEG for every class in wnids.txt")
    return found


def _tiny_val(files: _Files, top: str, label: dict[str, int]) -> list[tuple[int, str]]:
    annotations = f"{top}val/val_annotations.txt"
    present = set(files.names)
    if annotations not in present:
        # The reference moves val images into val/<wnid>/images/ and deletes the annotations: read that too.
        moved = _class_images(files, top, "val", label)
        if not moved:
            raise DataError(f"{files.label(annotations)} missing: put the official val/ folder "
                            "(val_annotations.txt and images/*.JPEG) back")
        return moved
    found = []
    for number, line in enumerate(files.read(annotations).decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        name = f"{top}val/images/{fields[0]}"
        if len(fields) < 2 or fields[1] not in label or name not in present:
            raise DataError(f"{files.label(annotations)} line {number} is not '<file> TAB <wnid> ...' naming an image "
                            f"in val/images/ and a class in wnids.txt: {line[:80]!r}")
        found.append((label[fields[1]], name))
    return sorted(found)


def _decode_tinyimagenet(source: Path) -> dict[str, np.ndarray]:
    with _Files(source) as files:
        top = _tiny_top(files)
        wnids = files.read(f"{top}wnids.txt").decode("utf-8", "replace").split()
        if len(wnids) < 2 or len(set(wnids)) != len(wnids):
            raise DataError(f"{files.label(top + 'wnids.txt')} must list distinct class ids, one a line; "
                            f"it lists {len(wnids)} ({len(set(wnids))} distinct)")
        label = {wnid: i for i, wnid in enumerate(wnids)}  # wnids.txt order is the label order
        arrays = {"classes": np.asarray(wnids)}
        for split, found in (("train", _tiny_train(files, top, label)), ("test", _tiny_val(files, top, label))):
            arrays[f"{split}_x"] = _decode_images(files, [name for _, name in found], TINY_SIZE)
            arrays[f"{split}_y"] = np.asarray([y for y, _ in found], dtype=np.int64)
    return arrays


def load_tinyimagenet(root: Path) -> Benchmark:
    """Tiny-ImageNet at 64x64; labels in wnids.txt order; the official val split is the test set."""
    folder, archive = root / TINY_DIR, root / TINY_ZIP
    source = folder if folder.is_dir() else archive if archive.is_file() else None
    if source is None:
        raise DataError(f"tinyimagenet not found: {where_tinyimagenet(root)}")
    cache = root / f"{TINY_DIR}.cache-{TINY_SIZE}.npz"
    return _as_benchmark("tinyimagenet", _cached(source, cache, _decode_tinyimagenet))


def where_tinyimagenet(root: Path) -> str:
    return (f"put the official archive at {root / TINY_ZIP}, or its extracted folder as {root / TINY_DIR}/ "
            "(wnids.txt, train/<wnid>/images/, val/val_annotations.txt, val/images/)")
