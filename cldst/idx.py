"""MNIST and Fashion-MNIST from their IDX files, laid out as torchvision downloads them.

`<root>/MNIST/raw/train-images-idx3-ubyte` and its three siblings (`FashionMNIST/raw/...` for
fashion-mnist), each gzipped (`.gz`) or not. No augmentation: the reference's loader asks for none
on MNIST (padding 0, no preprocessing), though its transform helper ignores that and crops and flips
anyway, a defect not copied here.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from cldst.benchmark import Benchmark, DataError, make_benchmark

FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
          "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
_NUM_CLASSES, _SIDE = 10, 28
# IDX type codes (third byte of the magic number); multi-byte values are big-endian.
_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """The array an IDX file holds: magic 00 00 <type> <ndim>, ndim big-endian uint32 sizes, then the data."""
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise DataError(f"{source} is not an IDX file (magic number {raw[:4].hex() or 'missing'}); "
                        "download it again")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source} is truncated: its header is cut short; download it again")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{source} is truncated or corrupt: its header says {shape} ({expected} bytes of data), "
                        f"it holds {len(raw) - header}; download it again")
    # A native-order, writable copy: torch refuses read-only buffers without a warning.
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _read(raw_dir: Path, stem: str) -> tuple[bytes, str]:
    plain, packed = raw_dir / stem, raw_dir / f"{stem}.gz"
    if plain.is_file():  # torchvision keeps both; the plain file needs no inflating
        return plain.read_bytes(), str(plain)
    try:
        return gzip.decompress(packed.read_bytes()), str(packed)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{packed} is truncated or corrupt ({e}); download it again") from e


def _check(images: np.ndarray, labels: np.ndarray, sources: tuple[str, str]) -> None:
    if images.dtype != np.uint8 or images.shape[1:] != (_SIDE, _SIDE):
        raise DataError(f"{sources[0]} does not hold 28x28 uint8 images: it holds {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != (len(images),):
        raise DataError(f"{sources[1]} does not hold {len(images)} uint8 labels for {sources[0]}: "
                        f"it holds {labels.dtype} {labels.shape}")
    if labels.size and labels.max() >= _NUM_CLASSES:
        raise DataError(f"{sources[1]} holds label {labels.max()}, outside 0..{_NUM_CLASSES - 1}")


def load(name: str, root: Path) -> Benchmark:
    """mnist or fashion-mnist from `<root>/<MNIST|FashionMNIST>/raw/`."""
    raw_dir = root / FOLDERS[name] / "raw"
    missing = [stem for stem in _FILES.values() if not (raw_dir / stem).is_file()
               and not (raw_dir / f"{stem}.gz").is_file()]
    if missing:
        raise DataError(f"{name} not found: {where(name, root, missing)}")
    arrays, sources = {}, {}
    for key, stem in _FILES.items():
        raw, sources[key] = _read(raw_dir, stem)
        arrays[key] = parse_idx(raw, sources[key])
    for split in ("train", "test"):
        _check(arrays[f"{split}_x"], arrays[f"{split}_y"], (sources[f"{split}_x"], sources[f"{split}_y"]))
    return make_benchmark(name, (arrays["train_x"][..., None], arrays["train_y"]),
                          (arrays["test_x"][..., None], arrays["test_y"]), _NUM_CLASSES, crop_padding=0, flip=False)


def where(name: str, root: Path, stems: list[str] | None = None) -> str:
    """What to put where for `name` (all four files, or just `stems`)."""
    return (f"put {', '.join(stems or _FILES.values())} (each gzipped as .gz or not) in "
            f"{root / FOLDERS[name] / 'raw'}/, the layout torchvision downloads to")
