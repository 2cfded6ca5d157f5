"""Tests for pemn_compress.data on small subsets of the real Fashion-MNIST files (Debian package)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pemn_compress.data import (
    FASHION_MNIST_DEBIAN_DIR,
    ArrayDataset,
    BatchLoader,
    get_dataset,
    load_cifar,
    load_fashion_mnist,
    load_hook,
    load_mnist,
    load_npz,
    read_idx,
)
from pemn_compress.errors import DataError, DataNotFoundError, UserCodeError

FMNIST_DIR = Path(FASHION_MNIST_DEBIAN_DIR)
pytestmark = pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # On a 2-core machine shared with other jobs, torch's intra-op threads wait on each other for a
    # scheduler tick per op; one thread keeps the loader tests fast and changes no result.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def fmnist() -> ArrayDataset:
    return load_fashion_mnist()


@pytest.fixture(scope="module")
def small(fmnist) -> ArrayDataset:
    return fmnist.subset(600, 200, seed=0)


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    """An independent IDX writer: 00 00 <type> <ndim>, big-endian uint32 dims, big-endian payload."""
    code = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    dt = arr.dtype.type
    raw = bytes([0, 0, code[dt], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_idx_folder(folder: Path, ds: ArrayDataset, names=None, gz=(False, True, False, True)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
    ]
    arrays = [ds.x_train[:, 0], ds.y_train.astype(np.uint8), ds.x_test[:, 0], ds.y_test.astype(np.uint8)]
    for name, arr, z in zip(names, arrays, gz, strict=True):  # the four files of an IDX folder
        write_idx(folder / (name + (".gz" if z else "")), arr, gz=z)
    return folder


# ---------------------------------------------------------------------------------------------- real data


def test_fashion_mnist_real_files(fmnist):
    ds = fmnist
    assert ds.name == "fashion-mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.image_shape == (1, 28, 28) and ds.in_chans == 1 and ds.img_size == (28, 28)
    assert ds.suggested_crop_padding == 2
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)  # Fashion-MNIST is balanced
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
    (mean,), (std,) = ds.mean, ds.std
    assert isinstance(mean, float) and isinstance(std, float)
    assert 0.28 * 255 < mean < 0.29 * 255  # measured 72.94 (0.2860 * 255)
    assert 0.35 * 255 < std < 0.36 * 255  # measured 90.02 (0.3530 * 255)
    assert mean == pytest.approx(int(ds.x_train.sum(dtype=np.uint64)) / ds.x_train.size, rel=1e-12)


# ---------------------------------------------------------------------------------------------- IDX


def test_read_idx_plain_and_gz_agree(tmp_path, fmnist):
    imgs = read_idx(FMNIST_DIR / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(imgs[:, None], fmnist.x_test)
    sub = imgs[:50]
    plain = read_idx(write_idx(tmp_path / "a-idx3-ubyte", sub))
    zipped = read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", sub, gz=True))
    np.testing.assert_array_equal(plain, sub)
    np.testing.assert_array_equal(zipped, sub)
    assert plain.flags.writeable and zipped.flags.writeable


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64, np.int8])
def test_read_idx_multibyte_types_native_order(tmp_path, fmnist, dtype):
    arr = fmnist.x_test[:7, 0].astype(dtype) - (3 if np.dtype(dtype).kind != "u" else 0)
    got = read_idx(write_idx(tmp_path / "m.idx", arr))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_read_idx_rejects_truncated_and_overlong(tmp_path, fmnist):
    raw = write_idx(tmp_path / "ok", fmnist.x_test[:10, 0]).read_bytes()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(DataError, match=r"short.*need 7840 bytes, found 7835 bytes"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(raw + b"\0")
    with pytest.raises(DataError, match=r"long.*need 7840 bytes, found more"):
        read_idx(tmp_path / "long")
    (tmp_path / "dims").write_bytes(raw[:9])  # 3 dims declared, 1.25 present
    with pytest.raises(DataError, match="3 dimensions"):
        read_idx(tmp_path / "dims")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:-40])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(tmp_path / "cut.gz")


@pytest.mark.parametrize(
    "head",
    [b"\x01\x00\x08\x03", b"\x00\x00\x07\x03", b"\x00\x00\x08\x00", b"\x00\x00\x08\x11", b"PK\x03\x04", b"\x00\x00"],
)
def test_read_idx_rejects_bad_magic(tmp_path, head):
    p = tmp_path / "bad-magic"
    p.write_bytes(head + struct.pack(">3I", 1, 2, 2) + bytes(4) if len(head) == 4 else head)
    with pytest.raises(DataError, match="bad-magic") as info:
        read_idx(p)
    assert "expected" in str(info.value) and "found" in str(info.value)


def test_read_idx_hostile_dims_do_not_allocate(tmp_path):
    p = tmp_path / "huge"
    p.write_bytes(b"\x00\x00\x0e\x03" + struct.pack(">3I", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + bytes(64))
    with pytest.raises(DataError, match="found 64 bytes"):
        read_idx(p)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------- IDX folders


def test_load_mnist_folder_plain_gz_and_dotted_names(tmp_path, small):
    names = ["train-images.idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels.idx1-ubyte"]
    folder = write_idx_folder(tmp_path / "mnist", small, names=names)
    ds = load_mnist(folder)
    assert ds.name == "mnist" and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_train, small.x_train)
    np.testing.assert_array_equal(ds.y_test, small.y_test)
    assert get_dataset("MNIST", root=folder).num_train == 600


def test_fashion_mnist_root_env_and_aliases(tmp_path, monkeypatch, small):
    folder = write_idx_folder(tmp_path / "fm", small)
    monkeypatch.setenv("PEMN_FASHION_MNIST_DIR", str(folder))
    assert load_fashion_mnist().num_train == 600
    for spec in ("fashion-mnist", "fmnist", "fashion_mnist"):
        ds = get_dataset(spec)
        assert ds.num_train == 600 and ds.name == "fashion-mnist"
    assert load_fashion_mnist(folder).num_test == 200  # an explicit root wins too


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch, small):
    monkeypatch.delenv("PEMN_FASHION_MNIST_DIR", raising=False)
    monkeypatch.delenv("PEMN_MNIST_DIR", raising=False)
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DataError)
    folder = write_idx_folder(tmp_path / "partial", small)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\].*apt-get install"):
        load_fashion_mnist(folder)
    with pytest.raises(DataNotFoundError, match="PEMN_MNIST_DIR"):
        get_dataset("mnist")


# ---------------------------------------------------------------------------------------------- npz


def test_npz_round_trip_layouts(tmp_path, small):
    x3 = small.x_train[:, 0]  # NHW
    nhw = tmp_path / "nhw.npz"
    np.savez(nhw, x_train=x3, y_train=small.y_train, x_test=small.x_test[:, 0], y_test=small.y_test)
    ds = load_npz(nhw)
    assert ds.name == "nhw" and ds.image_shape == (1, 28, 28)
    np.testing.assert_array_equal(ds.x_train, small.x_train)

    rgb = np.stack([x3, 255 - x3, x3 // 2], axis=-1)  # (N, 28, 28, 3)
    nhwc = tmp_path / "nhwc.npz"
    np.savez_compressed(nhwc, x_train=rgb, y_train=small.y_train.astype(np.int32),
                        x_test=rgb[:5], y_test=small.y_train[:5], num_classes=12)
    ds = get_dataset(str(nhwc))
    assert ds.image_shape == (3, 28, 28) and ds.num_classes == 12 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train[:, 1], 255 - x3)
    assert len(ds.mean) == 3 and ds.mean[1] == pytest.approx(255 - small.mean[0], abs=3)

    nchw = tmp_path / "nchw.npz"
    xf = small.x_test.astype(np.float32) / 255
    np.savez(nchw, x_train=xf, y_train=small.y_test, x_test=xf, y_test=small.y_test)
    ds = load_npz(nchw)
    assert ds.x_train.dtype == np.float32 and ds.image_shape == (1, 28, 28)
    assert ds.mean[0] == pytest.approx(small.x_test.mean() / 255, rel=1e-6)


def test_npz_refuses_pickled_objects_and_missing_keys(tmp_path, small):
    evil = tmp_path / "objects.npz"
    objs = np.empty(2, dtype=object)
    objs[:] = [small.x_train[0], small.x_train[1]]
    np.savez(evil, x_train=objs, y_train=small.y_train[:2], x_test=small.x_test[:2], y_test=small.y_test[:2])
    with pytest.raises(DataError, match="objects.npz"):
        load_npz(evil)
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=small.x_train, y_train=small.y_train)
    with pytest.raises(
        DataError, match=r"expected keys x_train, y_train, x_test, y_test, found \['x_train', 'y_train'\]"
    ):
        load_npz(partial)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="junk.npz"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(DataNotFoundError):
        load_npz(tmp_path / "absent.npz")


# ---------------------------------------------------------------------------------------------- CIFAR pickles


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` (BINSTRING), as the published CIFAR batches were written."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(raw)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _dump_batch(path: Path, batch: dict, protocol) -> None:
    if protocol == "py2":
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(batch)
        path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    else:
        path.write_bytes(pickle.dumps(batch, protocol=protocol))


def _cifar_like(ds: ArrayDataset, idx: np.ndarray) -> np.ndarray:
    """Real Fashion-MNIST images zero-padded to 32x32 and tiled to 3 channels, flattened to (N, 3072)."""
    x = np.pad(ds.x_train[idx, 0], ((0, 0), (2, 2), (2, 2)))
    return np.repeat(x[:, None], 3, axis=1).reshape(len(idx), 3072)


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar10_pickle_folder(tmp_path, small, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(6):
        idx = np.arange(i * 20, (i + 1) * 20)
        name = f"data_batch_{i + 1}" if i < 5 else "test_batch"
        batch = {b"batch_label": b"batch %d" % i, b"labels": small.y_train[idx].tolist(),
                 b"data": _cifar_like(small, idx), b"filenames": [b"img_%d.png" % j for j in idx]}  # fmt: skip
        _dump_batch(folder / name, batch, protocol)
    ds = load_cifar(tmp_path)  # the folder above cifar-10-batches-py, variant detected
    assert ds.name == "cifar10" and ds.num_classes == 10 and ds.suggested_crop_padding == 4
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(ds.x_train[:, 2, 2:30, 2:30], small.x_train[:100, 0])
    np.testing.assert_array_equal(ds.y_train, small.y_train[:100])
    np.testing.assert_array_equal(ds.y_test, small.y_train[100:120])
    assert get_dataset("cifar10", root=folder).num_test == 20


def test_cifar100_pickle_folder(tmp_path, small):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, idx in (("train", np.arange(0, 50)), ("test", np.arange(50, 60))):
        fine = (small.y_train[idx] * 10 + 7).tolist()
        batch = {b"data": _cifar_like(small, idx), b"fine_labels": fine, b"coarse_labels": small.y_train[idx].tolist()}
        _dump_batch(folder / name, batch, "py2")
    ds = get_dataset("cifar100", root=tmp_path)
    assert ds.num_classes == 100 and ds.x_train.shape == (50, 3, 32, 32)
    np.testing.assert_array_equal(ds.y_test, small.y_train[50:60] * 10 + 7)


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


@pytest.mark.parametrize("payload", ["system", "eval", "codecs"])
def test_cifar_pickle_with_code_is_refused(tmp_path, small, payload):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar"
    folder.mkdir()
    good = {b"data": _cifar_like(small, np.arange(4)), b"labels": small.y_train[:4].tolist()}
    for i in range(1, 6):
        _dump_batch(folder / f"data_batch_{i}", good, 4)
    if payload == "system":
        _dump_batch(folder / "test_batch", {b"data": _Evil(f"touch {marker}"), b"labels": [0]}, 4)
    elif payload == "eval":
        _dump_batch(folder / "test_batch", {b"data": _EvalEvil(), b"labels": [0]}, 2)
    else:  # the one allowed _codecs.encode, asked for a codec other than latin1
        raw = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R."
        (folder / "test_batch").write_bytes(raw)
    with pytest.raises(DataError, match=r"test_batch.*(refused global|only for str with latin1)"):
        load_cifar(folder)
    assert not marker.exists()


def test_cifar_missing_batch(tmp_path, small):
    folder = tmp_path / "c10"
    folder.mkdir()
    _dump_batch(folder / "data_batch_1", {b"data": _cifar_like(small, np.arange(2)), b"labels": [0, 1]}, 4)
    with pytest.raises(DataNotFoundError, match="data_batch_2"):
        load_cifar(folder)


# ---------------------------------------------------------------------------------------------- hooks and specs


def test_hook_loading(tmp_path, monkeypatch, small):
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, x_train=small.x_train, y_train=small.y_train, x_test=small.x_test, y_test=small.y_test)
    (tmp_path / "pemn_test_hook_mod.py").write_text(textwrap.dedent(f"""
        import numpy as np, torch
        from pemn_compress.data import ArrayDataset

        def _arrays(path={str(arrays)!r}):
            z = np.load(path)
            return z["x_train"], z["y_train"], z["x_test"], z["y_test"]

        def as_dict(root=None):
            xtr, ytr, xte, yte = _arrays(root or {str(arrays)!r})
            return dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, name="mine", num_classes=11)

        def as_tuple():
            return _arrays()

        def as_pairs():
            xtr, ytr, xte, yte = _arrays()
            return (torch.from_numpy(xtr), torch.from_numpy(ytr)), (xte, yte)

        def as_dataset():
            return ArrayDataset(*_arrays(), name="ds")

        def bad():
            return 42
    """))
    monkeypatch.chdir(tmp_path)  # the working folder is importable, as for every reference
    monkeypatch.delitem(sys.modules, "pemn_test_hook_mod", raising=False)
    ds = get_dataset("pemn_test_hook_mod:as_dict", root=str(arrays))
    assert ds.name == "mine" and ds.num_classes == 11
    np.testing.assert_array_equal(ds.x_train, small.x_train)
    for fn in ("as_tuple", "as_pairs", "as_dataset"):
        ds = load_hook(f"pemn_test_hook_mod:{fn}")
        np.testing.assert_array_equal(ds.y_test, small.y_test)
        assert ds.mean == pytest.approx(small.x_train.mean())  # recomputed from the subset's train split
    with pytest.raises(DataError, match="found int"):
        load_hook("pemn_test_hook_mod:bad")
    with pytest.raises(UserCodeError, match="data hook pemn_test_hook_mod:absent: .* no attribute"):
        load_hook("pemn_test_hook_mod:absent")
    with pytest.raises(UserCodeError, match="data hook pemn_no_such_module_xyz:f: cannot import"):
        load_hook("pemn_no_such_module_xyz:f")
    monkeypatch.delitem(sys.modules, "pemn_test_hook_mod", raising=False)


def test_unknown_spec_lists_accepted_forms():
    with pytest.raises(DataError) as info:
        get_dataset("imagenet")
    msg = str(info.value)
    for form in ("fashion-mnist", "fmnist", "mnist", "cifar10", "cifar100", ".npz", "module:function"):
        assert form in msg


# ---------------------------------------------------------------------------------------------- validation


def test_dataset_validation_messages(small):
    x, y = small.x_train, small.y_train
    with pytest.raises(DataError, match=r"labels must lie in \[0, 5\), found a label 9"):
        ArrayDataset(x, y, x, y, num_classes=5)
    with pytest.raises(DataError, match="600 images but y_train has 599 labels"):
        ArrayDataset(x, y[:-1], x, y)
    with pytest.raises(DataError, match="at least 1 sample, found 0"):
        ArrayDataset(x, y, x[:0], y[:0])
    with pytest.raises(DataError, match="non-integer"):
        ArrayDataset(x, y + 0.5, x, y)
    with pytest.raises(DataError, match=">= 0, found -1"):
        ArrayDataset(x, y - 1, x, y)
    with pytest.raises(DataError, match=r"found \(600, 784\)"):
        ArrayDataset(x.reshape(600, -1), y, x, y)
    with pytest.raises(DataError, match="0..255"):
        ArrayDataset(x.astype(np.int32) * 2, y, x, y)
    with pytest.raises(DataError, match="one shape"):
        ArrayDataset(x, y, x[:, :, :27], y)
    assert "train=600" in repr(small) and "num_classes=10" in repr(small)


def test_subset_is_deterministic_and_stratified(fmnist):
    a = fmnist.subset(1000, 300, seed=3)
    b = fmnist.subset(1000, 300, seed=3)
    c = fmnist.subset(1000, 300, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    np.testing.assert_array_equal(np.bincount(a.y_train, minlength=10), [100] * 10)
    np.testing.assert_array_equal(np.bincount(a.y_test, minlength=10), [30] * 10)
    assert a.mean == fmnist.mean and a.std == fmnist.std and a.num_classes == 10
    assert fmnist.subset(None, 5).num_train == 60000
    # an unbalanced source: each class keeps its share, within rounding
    keep = np.concatenate([np.flatnonzero(a.y_train == k)[: 10 * (k + 1)] for k in range(10)])  # 10, 20, ..., 100
    skew = ArrayDataset(a.x_train[keep], a.y_train[keep], a.x_test, a.y_test)
    s = skew.subset(101, seed=0)
    counts = np.bincount(s.y_train, minlength=10)
    assert counts.sum() == 101
    assert np.all(np.abs(counts - 101 * np.arange(1, 11) / 55) < 1)


# ---------------------------------------------------------------------------------------------- BatchLoader


def _collect(loader):
    xs, ys = zip(*loader, strict=True)  # every batch is an (x, y) pair
    return torch.cat(xs), torch.cat(ys)


def test_loader_is_a_function_of_seed_and_epoch(small):
    kw = dict(batch_size=64, shuffle=True, seed=7, crop_padding=2, hflip=True)
    a = BatchLoader.from_dataset(small, "train", **kw)
    x1, y1 = _collect(a)
    x2, y2 = _collect(a)  # the same epoch again
    x3, y3 = _collect(BatchLoader.from_dataset(small, "train", **kw))  # a fresh loader
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(x1, x3) and torch.equal(y1, y3)
    a.set_epoch(1)
    assert not torch.equal(a.indices(), a.indices(0))
    x4, _ = _collect(a)
    assert not torch.equal(x1, x4)
    assert not torch.equal(BatchLoader.from_dataset(small, **{**kw, "seed": 8}).indices(), a.indices(0))
    assert sorted(a.indices().tolist()) == list(range(600))
    assert len(a) == 10 and a.num_samples == 600
    plain = BatchLoader.from_dataset(small, "test", batch_size=64)
    assert torch.equal(plain.indices(), torch.arange(200)) and len(plain) == 4
    _, y = _collect(plain)
    assert torch.equal(y, torch.from_numpy(small.y_test))


def test_loader_ranks_are_disjoint_and_cover_the_epoch(small):
    kw = dict(batch_size=50, shuffle=True, seed=1, drop_last=True, world_size=3)
    loaders = [BatchLoader.from_dataset(small, rank=r, **kw) for r in range(3)]
    for ld in loaders:
        ld.set_epoch(5)
    parts = [ld.indices() for ld in loaders]
    assert [len(ld) for ld in loaders] == [4, 4, 4] and all(ld.num_samples == 200 for ld in loaders)
    assert sorted(torch.cat(parts).tolist()) == list(range(600))
    for ld, idx in zip(loaders, parts, strict=True):  # the batches carry exactly those samples
        _, y = _collect(ld)
        assert torch.equal(y, torch.from_numpy(small.y_train)[idx])
    # not divisible, no drop_last: equal batch counts, every sample covered, a few repeated
    odd = [BatchLoader(small.x_train[:601 - 9], small.y_train[:592], batch_size=64, shuffle=True, rank=r, world_size=3)
           for r in range(3)]  # fmt: skip
    assert len({len(ld) for ld in odd}) == 1 and len({ld.num_samples for ld in odd}) == 1
    assert set(torch.cat([ld.indices() for ld in odd]).tolist()) == set(range(592))
    ragged = BatchLoader(small.x_train, small.y_train, batch_size=64, drop_last=True)
    assert len(ragged) == 9 and all(len(y) == 64 for _, y in ragged)


def test_loader_normalises_to_zero_mean_unit_std(fmnist):
    ld = BatchLoader.from_dataset(fmnist, "train", batch_size=4096)
    s = ss = 0.0
    for x, _ in ld:
        s += x.double().sum().item()
        ss += x.double().pow(2).sum().item()
    n = 60000 * 784
    assert s / n == pytest.approx(0.0, abs=1e-4)
    assert (ss / n) ** 0.5 == pytest.approx(1.0, abs=1e-4)
    x, y = next(iter(ld))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (4096, 1, 28, 28)


def _shifts(img: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every crop of the zero-padded image and its mirror, done naively."""
    C, H, W = img.shape
    p = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = p[:, dy : dy + H, dx : dx + W]
            out += [crop, crop[:, :, ::-1]]
    return out


def test_loader_augmentation_is_crop_and_flip(small):
    mean, std = small.mean[0], small.std[0]
    plain = BatchLoader.from_dataset(small, batch_size=100)
    aug = BatchLoader.from_dataset(small, batch_size=100, crop_padding=2, hflip=True, seed=3)
    xp, _ = next(iter(plain))
    xa, _ = next(iter(aug))
    assert xa.shape == xp.shape == (100, 1, 28, 28)
    raw = np.rint(xa.numpy().astype(np.float64) * std + mean)  # back to uint8 units
    changed = 0
    for i in range(100):
        cands = _shifts(small.x_train[i].astype(np.float64), 2)
        assert any(np.array_equal(raw[i], c) for c in cands), f"image {i} is not a crop/flip of its source"
        changed += not np.array_equal(raw[i], small.x_train[i])
    assert changed > 50
    flip_only = BatchLoader.from_dataset(small, batch_size=100, hflip=True)
    xf, _ = next(iter(flip_only))
    mirrored = [torch.equal(xf[i], xp[i].flip(-1)) and not torch.equal(xf[i], xp[i]) for i in range(100)]
    same = [torch.equal(xf[i], xp[i]) for i in range(100)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True)) and 20 < sum(mirrored) < 80


def test_loader_argument_checks(small):
    with pytest.raises(DataError, match="rank"):
        BatchLoader(small.x_train, small.y_train, rank=2, world_size=2)
    with pytest.raises(DataError, match="batch_size"):
        BatchLoader(small.x_train, small.y_train, batch_size=0)
    with pytest.raises(DataError, match="600 images and 599 labels"):
        BatchLoader(small.x_train, small.y_train[:-1])
    with pytest.raises(DataError, match="split"):
        BatchLoader.from_dataset(small, "val")
