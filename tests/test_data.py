"""cldst.data on small data made here: official-format CIFAR archives, a miniImageNet zip, digits, synthetic."""

import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cldst import data, imagefolders
from cldst.data import DataError, load_benchmark, select_classes, task_indices
from scripts.make_small_cifar100 import py2_pickle  # the Python-2 pickle writer, shared with the parity data

# The CIFAR layouts: (folder, train batches, test batches, label key, classes)
LAYOUTS = {
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
}
PIXEL = (2, 3, 1)  # (h, w, c) of the one bright pixel in the first training image


def _cifar_members(name: str, per_batch: int = 6, extra: dict | None = None) -> dict[str, bytes]:
    """Pickled batches as in the official archive; the first training image is black but for PIXEL."""
    _, train, test, key, num_classes = LAYOUTS[name]
    rng = np.random.default_rng(1)
    members = {}
    for i, member in enumerate(train + test):
        pixels = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        if i == 0:
            h, w, c = PIXEL
            pixels[0] = 0
            pixels[0, c * 1024 + h * 32 + w] = 255
        labels = [(i * per_batch + j) % num_classes for j in range(per_batch)]
        batch = {b"batch_label": f"batch {i}", key: labels, b"data": pixels, b"filenames": [b"x.png"] * per_batch}
        members[member] = py2_pickle({**batch, **(extra or {})} if i == 0 else batch)
    members["meta"] = py2_pickle({b"label_names": [f"class{i}" for i in range(num_classes)]})
    return members


def _write_tar(path: Path, folder: str, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member, raw in members.items():
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def _write_cifar(root: Path, name: str, extracted: bool = False, **kwargs) -> Path:
    folder = LAYOUTS[name][0]
    members = _cifar_members(name, **kwargs)
    if not extracted:
        return _write_tar(root / data._CIFAR[name].archive, folder, members)
    (root / folder).mkdir()
    for member, raw in members.items():
        (root / folder / member).write_bytes(raw)
    return root / folder


@pytest.mark.parametrize("extracted", [False, True], ids=["tar.gz", "folder"])
@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
def test_cifar_loads_official_format(tmp_path, name, extracted):
    _write_cifar(tmp_path, name, extracted)
    bench = load_benchmark(name, tmp_path)
    _, train, test, _, num_classes = LAYOUTS[name]
    n_train, n_test = 6 * len(train), 6 * len(test)
    assert bench.train_x.shape == (n_train, 32, 32, 3) and bench.test_x.shape == (n_test, 32, 32, 3)
    assert bench.train_x.dtype == np.uint8 and bench.train_y.dtype == np.int64
    assert bench.train_y.tolist() == [i % num_classes for i in range(n_train)]
    assert bench.test_y.tolist() == [(n_train + i) % num_classes for i in range(n_test)]
    assert np.argwhere(bench.train_x[0]).tolist() == [list(PIXEL)]  # CHW rows land at (H, W, C)
    assert (bench.num_classes, bench.channels, bench.image_size, bench.crop_padding, bench.flip) == (
        num_classes, 3, 32, 4, True)
    assert all(0.4 < m < 0.6 for m in bench.mean) and all(0.2 < s < 0.4 for s in bench.std)


def test_cifar_prefers_extracted_folder(tmp_path):
    _write_cifar(tmp_path, "cifar10", extracted=True)
    (tmp_path / data._CIFAR["cifar10"].archive).write_bytes(b"not an archive")
    assert load_benchmark("cifar10", tmp_path).train_x.shape[0] == 30


class _WritesMarker:
    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch {self.marker}",)
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("how", ["system", "open"])
def test_malicious_pickle_is_refused_without_running(tmp_path, how):
    marker = tmp_path / "marker"
    _write_cifar(tmp_path, "cifar100", extra={b"payload": _WritesMarker(marker, how)})
    with pytest.raises(DataError, match=r"refusing to load .*cifar-100-python/train.*asks for .*(system|open)"):
        load_benchmark("cifar100", tmp_path)
    assert not marker.exists()


def test_missing_cifar_names_the_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_benchmark("cifar100", tmp_path)
    assert str(tmp_path / "cifar-100-python.tar.gz") in str(err.value)
    assert "cldst data download cifar100" in str(err.value)


def test_truncated_archive_names_the_file(tmp_path):
    archive = _write_cifar(tmp_path, "cifar100")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_benchmark("cifar100", tmp_path)
    assert str(archive) in str(err.value)


def test_wrong_contents_are_refused(tmp_path):
    members = _cifar_members("cifar100")
    _write_tar(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", {"train": members["train"]})
    with pytest.raises(DataError, match="lacks cifar-100-python/test"):
        load_benchmark("cifar100", tmp_path)
    members["train"] = py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]})
    _write_tar(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", members)
    with pytest.raises(DataError, match=r"cifar-100-python/train is not a CIFAR batch"):
        load_benchmark("cifar100", tmp_path)
    members["train"] = b"garbage"
    _write_tar(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", members)
    with pytest.raises(DataError, match=r"cifar-100-python/train is not a readable CIFAR batch"):
        load_benchmark("cifar100", tmp_path)


# ---------------------------------------------------------------- miniImageNet

MINI_CLASSES = {"n02": (200, 0, 0), "n01": (0, 0, 200), "n03": (0, 200, 0)}  # deliberately not in sorted order


def _mini_images() -> dict[str, bytes]:
    """10 PNGs per class in the class colour, brightened by 5 per image so that images differ."""
    files = {}
    for cls, colour in MINI_CLASSES.items():
        for i in range(10):
            buffer = io.BytesIO()
            Image.new("RGB", (40, 36), tuple(c + 5 * i for c in colour)).save(buffer, format="PNG")
            files[f"{cls}/img{i}.png"] = buffer.getvalue()
    return files


def _listing(path: Path) -> list:
    if path.is_file():
        return [hashlib.md5(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns]
    return sorted((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


def _write_mini(root: Path, layout: str) -> Path:
    files = _mini_images()
    if layout == "folder":
        for name, raw in files.items():
            (root / "miniImageNet100" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "miniImageNet100" / name).write_bytes(raw)
        return root / "miniImageNet100"
    prefix = "miniImageNet100/" if layout == "zip-top-folder" else ""
    with zipfile.ZipFile(root / "miniImageNet100.zip", "w") as zf:
        zf.writestr("__MACOSX/n01/._img0.png", b"junk")
        for name, raw in files.items():
            zf.writestr(prefix + name, raw)
    return root / "miniImageNet100.zip"


def test_miniimagenet_layouts_agree_and_leave_files_alone(tmp_path):
    loaded = []
    for layout in ("zip-top-folder", "zip-flat", "folder"):
        root = tmp_path / layout
        root.mkdir()
        source = _write_mini(root, layout)
        before = _listing(source)
        bench = load_benchmark("miniimagenet", root)
        assert _listing(source) == before
        assert (root / "miniImageNet100.cache-32-centre.npz").is_file()
        loaded.append(bench)
    bench = loaded[0]
    assert bench.train_x.shape == (24, 32, 32, 3) and bench.test_x.shape == (6, 32, 32, 3)  # 10 // 5 held out
    assert bench.train_x.dtype == np.uint8 and bench.num_classes == 3
    for label, colour in enumerate(MINI_CLASSES[c] for c in sorted(MINI_CLASSES)):  # labels follow sorted names
        dominant = int(np.argmax(colour))
        assert (bench.train_x[bench.train_y == label][..., dominant] >= 200).all()
    assert np.bincount(bench.test_y).tolist() == [2, 2, 2]
    for other in loaded[1:]:  # same files, same seeded split, whatever the layout
        assert np.array_equal(other.test_x, bench.test_x) and np.array_equal(other.train_y, bench.train_y)


def test_miniimagenet_cache_is_reused_and_refreshed(tmp_path, monkeypatch):
    archive = _write_mini(tmp_path, "zip-top-folder")
    first = load_benchmark("miniimagenet", tmp_path)
    decoded = []
    real_decode = imagefolders._decode_image
    monkeypatch.setattr(imagefolders, "_decode_image", lambda raw, source, size: decoded.append(source)
                        or real_decode(raw, source, size))
    again = load_benchmark("miniimagenet", tmp_path)
    assert decoded == [] and np.array_equal(again.train_x, first.train_x)
    newer = (tmp_path / "miniImageNet100.cache-32-centre.npz").stat().st_mtime + 10
    os.utime(archive, (newer, newer))
    rebuilt = load_benchmark("miniimagenet", tmp_path)
    assert len(decoded) == 30 and np.array_equal(rebuilt.test_x, first.test_x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["miniImageNet100.cache-32-centre.npz", "miniImageNet100.zip"]


def test_missing_miniimagenet_names_both_layouts(tmp_path):
    with pytest.raises(DataError, match=r"miniImageNet100\.zip.*miniImageNet100/<class>"):
        load_benchmark("miniimagenet", tmp_path)


# ---------------------------------------------------------------- digits, synthetic

def test_digits():
    bench = load_benchmark("digits")
    assert bench.train_x.shape == (1437, 8, 8, 1) and bench.test_x.shape == (360, 8, 8, 1)
    assert bench.train_x.dtype == np.uint8 and bench.train_x.max() == 255
    assert bench.num_classes == 10 and set(bench.test_y.tolist()) == set(range(10))
    assert (bench.crop_padding, bench.flip, bench.channels, bench.image_size) == (1, False, 1, 8)
    assert np.array_equal(load_benchmark("digits").test_x, bench.test_x)


def test_synthetic_is_deterministic_and_learnable_but_not_trivial():
    bench, again = load_benchmark("synthetic"), load_benchmark("synthetic")
    assert bench.train_x.shape == (1200, 8, 8, 1) and bench.test_x.shape == (400, 8, 8, 1)
    assert np.array_equal(bench.train_x, again.train_x) and np.array_equal(bench.test_y, again.test_y)
    np.testing.assert_allclose(bench.mean, [bench.train_x.mean() / 255])
    np.testing.assert_allclose(bench.std, [bench.train_x.std() / 255])
    x = bench.train_x.reshape(len(bench.train_x), -1).astype(float)
    centroids = np.stack([x[bench.train_y == c].mean(0) for c in range(10)])
    test = bench.test_x.reshape(len(bench.test_x), -1).astype(float)
    accuracy = (((test[:, None] - centroids) ** 2).sum(-1).argmin(1) == bench.test_y).mean()
    assert 0.6 < accuracy < 0.98


def test_unknown_benchmark():
    with pytest.raises(DataError, match="unknown benchmark 'imagenet21k'"):
        load_benchmark("imagenet21k")


# ---------------------------------------------------------------- class order and tasks

def test_select_classes_keeps_order_or_permutes_by_seed():
    bench = load_benchmark("synthetic")
    assert select_classes(bench, 10, None) is bench
    first4 = select_classes(bench, 4, None)
    assert first4.num_classes == 4 and sorted(set(first4.train_y.tolist())) == [0, 1, 2, 3]
    assert np.array_equal(first4.train_x, bench.train_x[bench.train_y < 4])
    permuted = select_classes(bench, 4, class_order_seed=3)
    order = np.random.default_rng(3).permutation(10)
    for new, old in enumerate(order[:4]):
        assert np.array_equal(permuted.train_x[permuted.train_y == new], bench.train_x[bench.train_y == old])
        assert np.array_equal(permuted.test_x[permuted.test_y == new], bench.test_x[bench.test_y == old])
    assert np.array_equal(select_classes(bench, 4, 3).train_y, permuted.train_y)
    assert permuted.mean == bench.mean
    with pytest.raises(ValueError):
        select_classes(bench, 11, None)


def test_task_indices():
    labels = np.array([0, 5, 2, 3, 2, 9, 4])
    idx = task_indices(labels, 1, 2)
    assert idx.dtype == np.int64 and idx.tolist() == [2, 3, 4]
    assert task_indices(labels, 4, 2).tolist() == [5]


# ---------------------------------------------------------------- download

class _FakeResponse(io.BytesIO):
    def __init__(self, body: bytes):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def test_download_refuses_other_names(tmp_path):
    with pytest.raises(DataError, match=r"only cifar10, cifar100 can be downloaded.*miniImageNet100\.zip"):
        data.download("miniimagenet", tmp_path)


def test_download_md5_mismatch_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(b"not the archive"))
    with pytest.raises(DataError, match="md5"):
        data.download("cifar100", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_network_error(tmp_path, monkeypatch):
    def unreachable(url, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(DataError, match="could not download .*no route to host.*put it at"):
        data.download("cifar10", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_success_then_load(tmp_path, monkeypatch, capsys):
    body = _write_tar(tmp_path / "made.tar.gz", "cifar-10-batches-py", _cifar_members("cifar10")).read_bytes()
    root = tmp_path / "data"
    monkeypatch.setitem(data._CIFAR, "cifar10", replace(data._CIFAR["cifar10"], md5=hashlib.md5(body).hexdigest()))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(body))
    path = data.download("cifar10", root)
    assert path == root / "cifar-10-python.tar.gz" and path.read_bytes() == body
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]
    assert load_benchmark("cifar10", root).test_x.shape == (6, 32, 32, 3)
