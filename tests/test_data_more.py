"""MNIST / Fashion-MNIST (IDX files) and Tiny-ImageNet (folder or zip), on small files written here
in the real layouts, loaded through load_benchmark and the `cldst` command line."""

import gzip
import hashlib
import io
import os
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cldst import idx, imagefolders
from cldst.cli import main
from cldst.config import RunConfig
from cldst.data import DataError, load_benchmark

# ---------------------------------------------------------------- MNIST-style IDX files

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def _mnist_arrays(n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """Image i is black but for one pixel of value i+1 at row i % 28, column 5; label i % 10."""
    arrays = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = np.zeros((n, 28, 28), np.uint8)
        x[np.arange(n), np.arange(n) % 28, 5] = np.arange(n) + 1
        arrays[f"{stem}-images-idx3-ubyte"] = x
        arrays[f"{stem}-labels-idx1-ubyte"] = (np.arange(n) % 10).astype(np.uint8)
    return arrays


def _write_mnist(root: Path, name: str = "mnist", packing: str = "raw", n_train: int = 30, n_test: int = 12) -> Path:
    raw_dir = root / idx.FOLDERS[name] / "raw"
    raw_dir.mkdir(parents=True)
    for i, (stem, array) in enumerate(_mnist_arrays(n_train, n_test).items()):
        gz = packing == "gz" or (packing == "mixed" and i % 2)
        body = _idx(array)
        (raw_dir / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(body) if gz else body)
    return raw_dir


@pytest.mark.parametrize("packing", ["raw", "gz", "mixed"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_loads_torchvision_layout(tmp_path, name, packing):
    _write_mnist(tmp_path, name, packing)
    bench = load_benchmark(name, tmp_path)
    assert bench.train_x.shape == (30, 28, 28, 1) and bench.test_x.shape == (12, 28, 28, 1)
    assert bench.train_x.dtype == np.uint8 and bench.train_y.dtype == np.int64
    assert bench.train_y.tolist() == [i % 10 for i in range(30)]
    assert bench.test_y.tolist() == [i % 10 for i in range(12)]
    for i in (0, 7, 29):  # file order kept, rows and columns where they were written
        assert np.argwhere(bench.train_x[i]).tolist() == [[i % 28, 5, 0]] and bench.train_x[i].max() == i + 1
    assert (bench.num_classes, bench.channels, bench.image_size) == (10, 1, 28)
    assert (bench.crop_padding, bench.flip) == (0, False)
    assert bench.train_x.flags.writeable


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    _write_mnist(tmp_path, "mnist")
    with pytest.raises(DataError, match=r"fashion-mnist not found: .*FashionMNIST/raw"):
        load_benchmark("fashion-mnist", tmp_path)


def test_parse_idx_reads_big_endian_dims_and_values():
    raw = bytes.fromhex("0000 0C 01 00000002 00000100 FFFFFFFF")  # int32, 1-d, 2 values: 256 and -1
    assert idx.parse_idx(raw, "x").tolist() == [256, -1]
    raw = bytes.fromhex("0000 08 02 00000002 00000003") + bytes(range(6))
    assert idx.parse_idx(raw, "x").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_missing_mnist_files_are_named(tmp_path):
    with pytest.raises(DataError) as err:
        load_benchmark("mnist", tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "MNIST" / "raw") in message
    assert all(stem in message for stem in IDX_STEMS) and "torchvision" in message
    raw_dir = _write_mnist(tmp_path)
    (raw_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"put t10k-labels-idx1-ubyte \(each gzipped") as err:
        load_benchmark("mnist", tmp_path)
    assert "train-images" not in str(err.value)


def _corrupt_images(raw_dir: Path) -> Path:
    path = raw_dir / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _bad_magic(raw_dir: Path) -> Path:
    path = raw_dir / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x1f\x8b" + path.read_bytes()[2:])
    return path


def _broken_gzip(raw_dir: Path) -> Path:
    path = raw_dir / "t10k-images-idx3-ubyte"
    packed = Path(f"{path}.gz")
    packed.write_bytes(gzip.compress(path.read_bytes())[:-30])
    path.unlink()
    return packed


def _short_labels(raw_dir: Path) -> Path:
    (raw_dir / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(29, np.uint8)))
    return raw_dir / "train-labels-idx1-ubyte"


def _label_out_of_range(raw_dir: Path) -> Path:
    (raw_dir / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.full(12, 10, np.uint8)))
    return raw_dir / "t10k-labels-idx1-ubyte"


def _wrong_side(raw_dir: Path) -> Path:
    (raw_dir / "train-images-idx3-ubyte").write_bytes(_idx(np.zeros((30, 32, 32), np.uint8)))
    return raw_dir / "train-images-idx3-ubyte"


@pytest.mark.parametrize("damage, expected", [
    (_corrupt_images, r"truncated or corrupt: its header says \(30, 28, 28\) \(23520 bytes of data\), it holds 23420"),
    (_bad_magic, r"is not an IDX file \(magic number 1f8b0801\)"),
    (_broken_gzip, r"truncated or corrupt .*download it again"),
    (_short_labels, r"does not hold 30 uint8 labels"),
    (_label_out_of_range, r"holds label 10, outside 0\.\.9"),
    (_wrong_side, r"does not hold 28x28 uint8 images: it holds uint8 \(30, 32, 32\)"),
])
def test_corrupt_mnist_file_is_named(tmp_path, damage, expected):
    path = damage(_write_mnist(tmp_path))
    with pytest.raises(DataError, match=expected) as err:
        load_benchmark("mnist", tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- Tiny-ImageNet

WNIDS = ["n03", "n01", "n02"]  # wnids.txt order, deliberately not sorted: it is the label order
COLOURS = {"n03": (220, 20, 20), "n01": (20, 220, 20), "n02": (20, 20, 220)}
TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 2


def _jpeg(colour: tuple[int, int, int], shade: int, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), tuple(max(0, c - shade) for c in colour)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _tiny_files(reference_moved_val: bool = False) -> dict[str, bytes]:
    """The official tree, small: wnids.txt, train/<wnid>/images, val/images + annotations, test/images."""
    files = {"wnids.txt": "".join(f"{w}\n" for w in WNIDS).encode(), "words.txt": b"n01\tthing\n"}
    for wnid in WNIDS:
        files[f"train/{wnid}/{wnid}_boxes.txt"] = b"ignored"
        for i in range(TRAIN_PER_CLASS):  # one image not 64x64: it is resized
            files[f"train/{wnid}/images/{wnid}_{i}.JPEG"] = _jpeg(COLOURS[wnid], 10 * i, 64 if i else 50)
    annotations = []
    for k in range(VAL_PER_CLASS * len(WNIDS)):
        wnid = sorted(WNIDS)[k % len(WNIDS)]
        where = f"val/{wnid}/images" if reference_moved_val else "val/images"
        files[f"{where}/val_{k}.JPEG"] = _jpeg(COLOURS[wnid], 3 * k)
        annotations.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    if not reference_moved_val:
        files["val/val_annotations.txt"] = "".join(annotations).encode()
    files["test/images/test_0.JPEG"] = _jpeg((0, 0, 0), 0)
    return files


def _write_tiny(root: Path, layout: str = "zip", files: dict[str, bytes] | None = None) -> Path:
    files = _tiny_files() if files is None else files
    if layout == "folder":
        for name, raw in files.items():
            (root / "tiny-imagenet-200" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "tiny-imagenet-200" / name).write_bytes(raw)
        return root / "tiny-imagenet-200"
    with zipfile.ZipFile(root / "tiny-imagenet-200.zip", "w") as zf:  # stored, as the official zip's JPEGs
        for name, raw in files.items():
            zf.writestr(f"tiny-imagenet-200/{name}", raw)
    return root / "tiny-imagenet-200.zip"


def _listing(path: Path) -> list:
    if path.is_file():
        return [hashlib.md5(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns]
    return sorted((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


def _check_colours(x: np.ndarray, y: np.ndarray) -> None:
    for label, wnid in enumerate(WNIDS):
        dominant = int(np.argmax(COLOURS[wnid]))
        assert (x[y == label][..., dominant] >= 150).all()
        assert (np.delete(x[y == label], dominant, axis=-1) <= 80).all()


def test_tinyimagenet_zip_and_folder_agree_and_leave_files_alone(tmp_path):
    loaded = []
    for layout in ("zip", "folder"):
        root = tmp_path / layout
        root.mkdir()
        source = _write_tiny(root, layout)
        before = _listing(source)
        loaded.append(load_benchmark("tinyimagenet", root))
        assert _listing(source) == before
        assert sorted(p.name for p in root.iterdir()) == sorted([source.name, "tiny-imagenet-200.cache-64.npz"])
    bench = loaded[0]
    assert bench.train_x.shape == (12, 64, 64, 3) and bench.test_x.shape == (6, 64, 64, 3)
    assert bench.train_x.dtype == np.uint8 and bench.num_classes == 3
    assert (bench.crop_padding, bench.flip, bench.image_size) == (4, True, 64)
    assert bench.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # val_k belongs to sorted(WNIDS)[k % 3]: n01, n02, n03 -> labels 1, 2, 0
    assert sorted(bench.test_y.tolist()) == [0, 0, 1, 1, 2, 2]
    _check_colours(bench.train_x, bench.train_y)
    _check_colours(bench.test_x, bench.test_y)
    other = loaded[1]
    assert np.array_equal(other.train_x, bench.train_x) and np.array_equal(other.test_y, bench.test_y)


def test_tinyimagenet_reads_the_val_layout_the_reference_leaves(tmp_path):
    official, moved = tmp_path / "official", tmp_path / "moved"
    official.mkdir(), moved.mkdir()
    _write_tiny(official, "folder")
    _write_tiny(moved, "folder", _tiny_files(reference_moved_val=True))
    expected, bench = load_benchmark("tinyimagenet", official), load_benchmark("tinyimagenet", moved)
    assert bench.test_y.tolist() == [0, 0, 1, 1, 2, 2] and np.array_equal(np.sort(expected.test_y), bench.test_y)
    _check_colours(bench.test_x, bench.test_y)


def test_tinyimagenet_cache_is_reused_refreshed_and_never_unpickled(tmp_path, monkeypatch):
    archive = _write_tiny(tmp_path)
    first = load_benchmark("tinyimagenet", tmp_path)
    decoded = []
    real_decode = imagefolders._decode_image
    monkeypatch.setattr(imagefolders, "_decode_image", lambda raw, source, size: decoded.append(source)
                        or real_decode(raw, source, size))
    again = load_benchmark("tinyimagenet", tmp_path)
    assert decoded == [] and np.array_equal(again.train_x, first.train_x)
    cache = tmp_path / "tiny-imagenet-200.cache-64.npz"
    assert stat.S_IMODE(cache.stat().st_mode) == stat.S_IMODE(archive.stat().st_mode) & 0o666
    newer = cache.stat().st_mtime + 10
    os.utime(archive, (newer, newer))
    rebuilt = load_benchmark("tinyimagenet", tmp_path)
    assert len(decoded) == 18 and np.array_equal(rebuilt.test_x, first.test_x)
    # A cache holding a pickle is never unpickled: it is rebuilt from the source.
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    arrays = {k: getattr(first, k) for k in ("train_x", "train_y", "test_x", "test_y")}
    np.savez(cache, **arrays, classes=np.array([Payload()], dtype=object))
    os.utime(cache, (newer + 10, newer + 10))
    decoded.clear()
    assert np.array_equal(load_benchmark("tinyimagenet", tmp_path).test_x, first.test_x)
    assert len(decoded) == 18 and not marker.exists()
    with np.load(cache, allow_pickle=False) as npz:
        assert npz["classes"].tolist() == WNIDS


def test_missing_tinyimagenet_names_both_layouts(tmp_path):
    with pytest.raises(DataError) as err:
        load_benchmark("tinyimagenet", tmp_path)
    assert str(tmp_path / "tiny-imagenet-200.zip") in str(err.value)
    assert f"{tmp_path / 'tiny-imagenet-200'}/ (wnids.txt, train/<wnid>/images/" in str(err.value)


def _without(name: str) -> dict[str, bytes]:
    return {k: v for k, v in _tiny_files().items() if k != name}


@pytest.mark.parametrize("files, expected", [
    (_without("wnids.txt"), r"tiny-imagenet-200\.zip lacks wnids\.txt"),
    ({**_tiny_files(), "wnids.txt": b"n03\nn01\nn02\nn04\n"}, r"no training images for n04: expected"),
    ({**_tiny_files(), "wnids.txt": b"n03\nn01\n"}, r"train/n02/images/n02_0\.JPEG is an image of class n02, which"),
    ({**_tiny_files(), "wnids.txt": b"n03\nn03\n"}, r"must list distinct class ids"),
    (_without("val/val_annotations.txt"), r"val/val_annotations\.txt missing: put the official val/ folder"),
    ({**_tiny_files(), "val/val_annotations.txt": b"val_0.JPEG\tn01\nval_9.JPEG\tn01\n"},
     r"val_annotations\.txt line 2 is not"),
    ({**_tiny_files(), "train/n01/images/n01_2.JPEG": b"\xff\xd8 not a jpeg"},
     r"cannot decode image .*tiny-imagenet-200\.zip:tiny-imagenet-200/train/n01/images/n01_2\.JPEG"),
])
def test_broken_tinyimagenet_is_named(tmp_path, files, expected):
    _write_tiny(tmp_path, "zip", files)
    with pytest.raises(DataError, match=expected) as err:
        load_benchmark("tinyimagenet", tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "tiny-imagenet-200.cache-64.npz").exists()


def test_truncated_or_bit_flipped_zip_is_named(tmp_path):
    archive = _write_tiny(tmp_path)
    body = archive.read_bytes()
    jpeg = _tiny_files()["train/n02/images/n02_1.JPEG"]
    at = body.index(jpeg) + len(jpeg) // 2
    archive.write_bytes(body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:])
    with pytest.raises(DataError, match=r"cannot read .*tiny-imagenet-200\.zip:tiny-imagenet-200/train/n02/images/"
                                        r"n02_1\.JPEG \(Bad CRC-32"):
        load_benchmark("tinyimagenet", tmp_path)
    archive.write_bytes(body[: len(body) // 2])
    with pytest.raises(DataError, match=r"tiny-imagenet-200\.zip is truncated or corrupt"):
        load_benchmark("tinyimagenet", tmp_path)


# ---------------------------------------------------------------- names and the command line

@pytest.mark.parametrize("typed, canonical, net, tasks, per_task", [
    ("MNIST", "mnist", "lenet5", 5, 2),
    ("fashion_mnist", "fashion-mnist", "lenet5", 5, 2),
    ("tiny-imagenet-200", "tinyimagenet", "resnet18", 10, 20),
])
def test_config_names_and_defaults(typed, canonical, net, tasks, per_task):
    cfg = RunConfig(benchmark=typed).resolve()
    assert (cfg.benchmark, cfg.net, cfg.num_tasks, cfg.classes_per_task) == (canonical, net, tasks, per_task)


def test_data_check_and_download_hint(tmp_path, capsys):
    _write_mnist(tmp_path, "fashion-mnist", "gz")
    main(["data", "check", "FashionMNIST", "--data-root", str(tmp_path)])
    assert capsys.readouterr().out == "fashion-mnist: train (30, 28, 28, 1), test (12, 28, 28, 1), 10 classes\n"
    _write_tiny(tmp_path)
    main(["data", "check", "tiny-imagenet-200", "--data-root", str(tmp_path)])
    assert "tinyimagenet: train (12, 64, 64, 3), test (6, 64, 64, 3), 3 classes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["data", "download", "mnist", "--data-root", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot download 'mnist': only cifar10, cifar100") and "MNIST/raw/" in err


def test_train_on_mnist_end_to_end(tmp_path, capsys):
    _write_mnist(tmp_path, "mnist", "gz", n_train=80, n_test=40)
    main(["train", "--dataset", "mnist", "--data-root", str(tmp_path), "--epochs", "1", "--device", "cpu",
          "--num_classes", "4", "--num_tasks", "2", "--batch-size", "8", "--update-frequency", "2", "--quiet"])
    out = capsys.readouterr().out
    assert "cldst train: mnist / lenet5, 2 tasks x 2 classes" in out and "ACC " in out
    assert "torchvision" not in sys.modules

