"""Write a small, seeded CIFAR-100 stand-in in the official python format, for parity runs (docs/parity.md).

The archive is `cifar-100-python.tar.gz` holding `cifar-100-python/{train,test,meta}`, pickled as Python 2
wrote them (protocol 2, str and bytes as Python 2 strings), so torchvision (which reads with
encoding='latin1') and cldst both load it. The folder is also written extracted beside the archive,
because a reader that skips the MD5 check does not extract.

Each class has a fixed random prototype: a coarse grid of colours (cells of `--cell` pixels) around
mid-grey. An image is its class prototype, shifted by up to `--jitter` pixels and scaled in contrast,
plus strong Gaussian pixel noise, clipped to uint8. Classes are learnable, but not in one look.

    python scripts/make_small_cifar100.py OUT_DIR [--train-per-class 50] [--test-per-class 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

NUM_CLASSES = 100
FOLDER = "cifar-100-python"
SIZE = 32


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 strings, as the official CIFAR pickles (made with Python 2) hold them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def prototypes(rng: np.random.Generator, cell: int, amplitude: float) -> np.ndarray:
    """(NUM_CLASSES, 32, 32, 3) float images: a random colour per grid cell, around 128."""
    grid = SIZE // cell
    coarse = rng.uniform(-amplitude, amplitude, size=(NUM_CLASSES, grid, grid, 3))
    return 128.0 + coarse.repeat(cell, axis=1).repeat(cell, axis=2)


def sample_images(rng: np.random.Generator, protos: np.ndarray, labels: np.ndarray, jitter: int,
                  noise: float) -> np.ndarray:
    """uint8 rows of 3072 values (3 planes of 32x32, row-major), as CIFAR stores them."""
    images = np.empty((len(labels), SIZE, SIZE, 3), dtype=np.float64)
    for i, label in enumerate(labels):
        dy, dx = rng.integers(-jitter, jitter + 1, size=2)
        contrast = rng.uniform(0.6, 1.4)
        shifted = np.roll(protos[label], (int(dy), int(dx)), axis=(0, 1))
        images[i] = 128.0 + contrast * (shifted - 128.0) + rng.normal(0.0, noise, size=(SIZE, SIZE, 3))
    pixels = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return pixels.transpose(0, 3, 1, 2).reshape(len(labels), 3 * SIZE * SIZE)


def split(rng: np.random.Generator, protos: np.ndarray, per_class: int, name: str, jitter: int,
          noise: float) -> bytes:
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), per_class))
    data = sample_images(rng, protos, labels, jitter, noise)
    coarse = [int(label) // 5 for label in labels]  # placeholder superclasses, 20 of them as in CIFAR-100
    batch = {
        "filenames": [f"img_{i:05d}.png" for i in range(len(labels))],
        "batch_label": f"{name} batch 1 of 1",
        "fine_labels": [int(label) for label in labels],
        "coarse_labels": coarse,
        "data": data,
    }
    return py2_pickle(batch)


def meta() -> bytes:
    return py2_pickle({
        "fine_label_names": [f"class{i:02d}" for i in range(NUM_CLASSES)],
        "coarse_label_names": [f"super{i:02d}" for i in range(NUM_CLASSES // 5)],
    })


def write(out: Path, members: dict[str, bytes]) -> Path:
    (out / FOLDER).mkdir(parents=True, exist_ok=True)
    for member, raw in members.items():
        (out / FOLDER / member).write_bytes(raw)
    archive = out / f"{FOLDER}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member, raw in members.items():
            info = tarfile.TarInfo(f"{FOLDER}/{member}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the archive (and its extracted folder) into")
    parser.add_argument("--train-per-class", type=int, default=50)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cell", type=int, default=8, help="prototype grid cell size in pixels (divides 32)")
    parser.add_argument("--amplitude", type=float, default=60.0, help="prototype colour spread around 128")
    parser.add_argument("--jitter", type=int, default=2, help="largest random shift of a prototype, in pixels")
    parser.add_argument("--noise", type=float, default=90.0, help="std of the Gaussian pixel noise")
    args = parser.parse_args()
    if SIZE % args.cell:
        parser.error(f"--cell: {args.cell} does not divide {SIZE}")
    rng = np.random.default_rng(args.seed)
    protos = prototypes(rng, args.cell, args.amplitude)
    members = {
        "train": split(rng, protos, args.train_per_class, "training", args.jitter, args.noise),
        "test": split(rng, protos, args.test_per_class, "testing", args.jitter, args.noise),
        "meta": meta(),
    }
    print(write(args.out, members))


if __name__ == "__main__":
    main()
