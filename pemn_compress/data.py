"""Image-classification data sets as numpy arrays, and a fast seeded batch loader over them.

Everything here works offline. The default real benchmark is Fashion-MNIST from the Debian package
``dataset-fashion-mnist`` (four gzipped IDX files under ``/usr/share/datasets/fashion-mnist``);
users bring MNIST (an IDX folder), CIFAR-10/100 (the standard python-pickle batch folder), an
``.npz`` file, or a ``module:function`` hook of their own. No torchvision.

* ``read_idx``            the IDX format with numpy only, plain or gzipped, fully validated.
* ``ArrayDataset``        the four arrays plus name, class count and per-channel mean/std.
* ``load_*``              one loader per source; ``get_dataset(spec)`` picks one from a string.
* ``BatchLoader``         (x, y) torch batches: vectorised per-batch augmentation, an epoch order
                          that is a pure function of ``(seed, epoch)``, and rank sharding.

Images are stored ``(N, C, H, W)`` as uint8 (raw 0..255) or float32; labels are int64. ``mean`` and
``std`` are in the units of the stored images (e.g. about 72.9 and 90.0 for Fashion-MNIST uint8).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import os
import pickle
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._data_names import DATASET_ENV, DATASET_SPECS
from .errors import DataError, DataNotFoundError
from .usercode import call_reference, is_reference

__all__ = [
    "ArrayDataset",
    "BatchLoader",
    "DATASET_SPECS",
    "FASHION_MNIST_DEBIAN_DIR",
    "epoch_indices",
    "get_dataset",
    "load_cifar",
    "load_fashion_mnist",
    "load_hook",
    "load_mnist",
    "load_npz",
    "read_idx",
]

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # where dataset-fashion-mnist puts it
FASHION_MNIST_ENV = DATASET_ENV["fashion-mnist"]
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


# ----------------------------------------------------------------------------------------------
# IDX

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_MAX_NDIM = 16
_READ_CHUNK = 1 << 24


def _open_maybe_gzip(path: Path):
    """Open ``path`` for binary reading, transparently un-gzipping it when it starts with 1f 8b."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _read_upto(f, n: int) -> bytearray:
    """Read at most ``n`` bytes in chunks, so a hostile declared size never allocates more than the file holds."""
    out = bytearray()
    while len(out) < n:
        chunk = f.read(min(_READ_CHUNK, n - len(out)))
        if not chunk:
            break
        out += chunk
    return out


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a native-byte-order numpy array.

    The header is validated: two zero bytes, a known type byte, 1..16 dimensions, each a big-endian
    uint32, and exactly ``prod(dims) * itemsize`` payload bytes after it (no more, no fewer).
    Raises ``DataNotFoundError`` if the file is missing and ``DataError`` if it is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"IDX file {path} does not exist")
    try:
        with _open_maybe_gzip(path) as f:
            head = _read_upto(f, 4)
            if len(head) < 4:
                raise DataError(f"{path}: IDX header: expected 4 magic bytes, found {len(head)} bytes in the file")
            if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or not 1 <= head[3] <= _IDX_MAX_NDIM:
                raise DataError(
                    f"{path}: bad IDX magic: expected 00 00 <type in "
                    f"{sorted(hex(k) for k in _IDX_DTYPES)}> <ndim 1..{_IDX_MAX_NDIM}>, found {bytes(head).hex(' ')}"
                )
            dtype, ndim = _IDX_DTYPES[head[2]], head[3]
            raw_dims = _read_upto(f, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(
                    f"{path}: IDX header declares {ndim} dimensions: expected {4 * ndim} bytes of sizes, "
                    f"found {len(raw_dims)}"
                )
            dims = tuple(int(d) for d in np.frombuffer(bytes(raw_dims), dtype=">u4"))
            expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
            payload = _read_upto(f, expected + 1)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read IDX file ({type(exc).__name__}: {exc})") from exc
    if len(payload) != expected:
        found = f"{len(payload)} bytes" if len(payload) < expected else "more bytes than that"
        raise DataError(
            f"{path}: IDX payload length mismatch: dims {dims} of {dtype.name} need {expected} bytes, found {found}"
        )
    arr = np.frombuffer(payload, dtype=dtype).reshape(dims)  # writable: backed by a bytearray
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------------------------
# The data set container


def _to_numpy(a: Any, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    try:
        out = np.asarray(a)
    except Exception as exc:  # noqa: BLE001 - anything array-like that is not
        raise DataError(f"{what}: expected an array, found {type(a).__name__}") from exc
    if out.dtype == object:
        raise DataError(f"{what}: expected a numeric array, found dtype object")
    return out


def _as_images(x: Any, what: str) -> np.ndarray:
    """Images as (N, C, H, W) uint8 or float32. Accepts NHW, NHWC (C in {1, 3}) and NCHW."""
    x = _to_numpy(x, what)
    if x.ndim == 3:  # (N, H, W)
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C)
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{what}: expected images of shape (N, H, W), (N, H, W, C) or (N, C, H, W), found {x.shape}")
    if min(x.shape[1:]) < 1:
        raise DataError(f"{what}: image shape (C, H, W) must be positive, found {x.shape[1:]}")
    if x.dtype == np.uint8:
        pass
    elif x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{what}: images contain NaN or infinity")
    elif x.dtype.kind in "iu":
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(f"{what}: integer images must lie in 0..255, found {lo}..{hi}")
        x = x.astype(np.uint8)
    else:
        raise DataError(f"{what}: expected uint8 or floating-point images, found dtype {x.dtype}")
    return np.ascontiguousarray(x)


def _as_labels(y: Any, what: str) -> np.ndarray:
    y = _to_numpy(y, what)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what}: expected labels of shape (N,), found {y.shape}")
    if y.dtype.kind == "f":
        if y.size and not np.array_equal(y, np.round(y)):
            raise DataError(f"{what}: expected integer class labels, found non-integer floats")
    elif y.dtype.kind not in "iu":
        raise DataError(f"{what}: expected integer class labels, found dtype {y.dtype}")
    y = np.ascontiguousarray(y.astype(np.int64))
    if y.size and y.min() < 0:
        raise DataError(f"{what}: labels must be >= 0, found {int(y.min())}")
    return y


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of (N, C, H, W) images, accumulated in float64."""
    means, stds = [], []
    for c in range(x.shape[1]):
        xc = x[:, c]
        if x.dtype == np.uint8:  # exact, one pass: a 256-bin histogram
            flat = torch.from_numpy(np.ascontiguousarray(xc).ravel())
            counts = torch.bincount(flat, minlength=256).numpy().astype(np.float64)  # 10x np.bincount on uint8
            v = np.arange(256, dtype=np.float64)
            n = counts.sum()
            m = float((counts * v).sum() / n)
            var = float((counts * (v - m) ** 2).sum() / n)
        else:  # two chunked passes keep memory small and the variance accurate
            n = xc.size
            step = max(1, (1 << 22) // max(1, xc[0].size))
            m = float(sum(xc[i : i + step].sum(dtype=np.float64) for i in range(0, len(xc), step)) / n)
            var = float(
                sum(((xc[i : i + step].astype(np.float64) - m) ** 2).sum() for i in range(0, len(xc), step)) / n
            )
        means.append(m)
        stds.append(float(np.sqrt(var)))
    return tuple(means), tuple(stds)


def _stratified_indices(y: np.ndarray, n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices of ``y`` with class proportions kept (largest remainder), sorted ascending."""
    total = len(y)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    counts = np.bincount(y, minlength=num_classes)
    base = (n * counts) // total
    frac = (n * counts) % total
    order = sorted(range(len(counts)), key=lambda k: (-int(frac[k]), k))
    for k in order[: n - int(base.sum())]:
        base[k] += 1
    picked = [rng.permutation(np.flatnonzero(y == k))[: base[k]] for k in range(len(counts)) if base[k]]
    return np.sort(np.concatenate(picked)).astype(np.int64)


@dataclasses.dataclass(eq=False)
class ArrayDataset:
    """Train and test splits as numpy arrays, validated and converted on construction.

    Images may be given NHW, NHWC (C in {1, 3}) or NCHW, as uint8, 0..255 integers or floats; they
    are stored (N, C, H, W) uint8 or float32. Labels become int64. ``num_classes`` defaults to
    ``max(label) + 1``; ``mean``/``std`` default to per-channel statistics of the train split,
    computed in float64, in the units of the stored images.
    """

    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    name: str = "dataset"
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        n = self.name
        self.x_train = _as_images(self.x_train, f"{n} x_train")
        self.x_test = _as_images(self.x_test, f"{n} x_test")
        self.y_train = _as_labels(self.y_train, f"{n} y_train")
        self.y_test = _as_labels(self.y_test, f"{n} y_test")
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if len(x) < 1:
                raise DataError(f"{n}: the {split} split needs at least 1 sample, found 0")
            if len(x) != len(y):
                raise DataError(f"{n}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{n}: train and test images must have one shape, "
                f"found {self.x_train.shape[1:]} and {self.x_test.shape[1:]}"
            )
        if self.x_train.dtype != self.x_test.dtype:
            raise DataError(
                f"{n}: train and test images must have one dtype, found {self.x_train.dtype} and {self.x_test.dtype}"
            )
        top = int(max(self.y_train.max(), self.y_test.max()))
        if self.num_classes is None:
            self.num_classes = top + 1
        self.num_classes = int(self.num_classes)
        if self.num_classes < 1 or top >= self.num_classes:
            raise DataError(f"{n}: labels must lie in [0, {self.num_classes}), found a label {top}")
        if self.mean is None or self.std is None:
            mean, std = _channel_stats(self.x_train)
            self.mean = mean if self.mean is None else self.mean
            self.std = std if self.std is None else self.std
        self.mean = tuple(float(v) for v in np.ravel(self.mean))
        self.std = tuple(float(v) for v in np.ravel(self.std))
        for key, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) != self.in_chans or not all(np.isfinite(vals)):
                raise DataError(f"{n}: {key} needs {self.in_chans} finite per-channel values, found {vals}")
        if any(s < 0 for s in self.std):
            raise DataError(f"{n}: std must be >= 0, found {self.std}")

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"image_shape={self.image_shape}, dtype={self.x_train.dtype}, num_classes={self.num_classes})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def in_chans(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def img_size(self) -> tuple[int, int]:
        """(H, W); not necessarily square."""
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_test(self) -> int:
        return len(self.x_test)

    @property
    def suggested_crop_padding(self) -> int:
        """The usual random-crop padding: 4 for 32x32-and-larger images, 2 for smaller ones (28x28)."""
        return 4 if min(self.img_size) >= 32 else 2

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> ArrayDataset:
        """A deterministic, class-stratified subset (``None`` keeps a split whole).

        Each class keeps its share of the split (largest-remainder rounding); which samples are
        kept is a pure function of ``seed``; kept samples stay in their original order. The subset
        inherits ``num_classes``, ``mean`` and ``std`` so it feeds a model exactly like the full set.
        """
        if int(seed) < 0:
            raise DataError(f"subset seed must be >= 0, found {seed}")
        picks = []
        for split_id, (n, y) in enumerate(((n_train, self.y_train), (n_test, self.y_test))):
            if n is None:
                picks.append(np.arange(len(y), dtype=np.int64))
                continue
            if int(n) < 1:
                raise DataError(f"{self.name}: a subset needs at least 1 sample per split, found {n}")
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), split_id]))
            classes = self.num_classes
            assert classes is not None  # __post_init__ sets it
            picks.append(_stratified_indices(y, int(n), classes, rng))
        tr, te = picks
        return ArrayDataset(
            self.x_train[tr], self.y_train[tr], self.x_test[te], self.y_test[te],
            name=self.name, num_classes=self.num_classes, mean=self.mean, std=self.std,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# IDX folders: Fashion-MNIST and MNIST

_IDX_STEMS = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _load_idx_folder(root: Path, name: str, how_to_get: str) -> ArrayDataset:
    if not root.is_dir():
        raise _not_found(f"{name}: folder {root} does not exist. {how_to_get}")
    found, missing = {}, []
    for key, stems in _IDX_STEMS.items():
        cands = [root / (s + ext) for s in stems for ext in ("", ".gz")]
        hit = next((p for p in cands if p.is_file()), None)
        if hit is None:
            missing.append(f"{stems[0]}[.gz]")
        else:
            found[key] = hit
    if missing:
        raise _not_found(f"{name}: {root} lacks {', '.join(missing)}. {how_to_get}")
    arrays = {k: read_idx(p) for k, p in found.items()}
    for k in ("x_train", "x_test"):
        if arrays[k].ndim != 3 or arrays[k].dtype != np.uint8:
            raise DataError(f"{found[k]}: expected uint8 images (N, H, W), found {arrays[k].dtype} {arrays[k].shape}")
    for k in ("y_train", "y_test"):
        if arrays[k].ndim != 1:
            raise DataError(f"{found[k]}: expected labels (N,), found shape {arrays[k].shape}")
    return _dataset(arrays, name=name, num_classes=10)


def _dataset(arrays: Mapping[str, Any], **fields: Any) -> ArrayDataset:
    """An ``ArrayDataset`` from a mapping holding ``x_train, y_train, x_test, y_test``, with other ``fields``."""
    return ArrayDataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], **fields)


_ROOT = "\0root\0"  # where a not-found message names the folder option: root= in Python, --data-root DIR in the CLI


def _not_found(text: str) -> DataNotFoundError:
    """A ``DataNotFoundError`` whose ``_ROOT`` says ``root=`` (Python) or ``--data-root DIR`` (the command line)."""
    return DataNotFoundError(text.replace(_ROOT, "root="), cli_message=text.replace(_ROOT, "--data-root DIR"))


def _resolve_root(root, env: str, default: str | None) -> Path | None:
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return Path(default) if default else None


def load_fashion_mnist(root: str | os.PathLike | None = None) -> ArrayDataset:
    """Fashion-MNIST (60000/10000 images 1x28x28 uint8, 10 classes) from an IDX folder.

    The folder is ``root``, else ``$PEMN_FASHION_MNIST_DIR``, else the Debian package's
    ``/usr/share/datasets/fashion-mnist``. File names may end in ``.gz`` or not.
    """
    folder = _resolve_root(root, FASHION_MNIST_ENV, FASHION_MNIST_DEBIAN_DIR)
    how = (
        "Install it with `apt-get install dataset-fashion-mnist` (files land in "
        f"{FASHION_MNIST_DEBIAN_DIR}), or pass a folder holding the four IDX files "
        f"({_ROOT} or ${FASHION_MNIST_ENV})."
    )
    if folder is None:  # pragma: no cover - the Debian folder is the default
        raise _not_found(f"fashion-mnist: no folder given. {how}")
    return _load_idx_folder(folder, "fashion-mnist", how)


def load_mnist(root: str | os.PathLike | None = None) -> ArrayDataset:
    """MNIST (or any data set in the same four-IDX-file layout) from a folder: ``root`` or ``$PEMN_MNIST_DIR``."""
    folder = _resolve_root(root, DATASET_ENV["mnist"], None)
    how = (
        "Pass a folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
        f"and t10k-labels-idx1-ubyte (each optionally .gz) as {_ROOT} or ${DATASET_ENV['mnist']}."
    )
    if folder is None:
        raise _not_found(f"mnist: no folder given. {how}")
    return _load_idx_folder(folder, "mnist", how)


# ----------------------------------------------------------------------------------------------
# CIFAR python-pickle batches, unpickled without running code


def _numpy_private(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy >= 2 and the 1.26 forward-compatibility shim), else
    ``numpy.core.<module>.<name>``: the functions numpy's own pickles name."""
    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except ImportError:  # pragma: no cover - numpy < 1.26
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


_np_reconstruct = _numpy_private("multiarray", "_reconstruct")
_np_frombuffer = _numpy_private("numeric", "_frombuffer")


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """The one use of ``_codecs.encode`` that Python 3 protocol-2 pickles of bytes make."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"_codecs.encode is allowed only for str with latin1, found {type(obj).__name__}, {encoding!r}"
        )
    return obj.encode("latin1")


# Every global a CIFAR batch (or a numpy array pickled by any protocol) can name; nothing else.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,  # protocol 2 written by Python 3
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts, lists, bytes, ints and numpy arrays, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def _safe_unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(
            f"{path}: not a safe CIFAR pickle batch ({type(exc).__name__}: {exc}); only dicts of "
            "bytes, lists, ints and numpy arrays are accepted"
        ) from exc


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    obj = _safe_unpickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict batch, found {type(obj).__name__}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    for key in ("data", label_key):
        if key not in d:
            raise DataError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(map(str, d))}")
    x = _to_numpy(d["data"], f"{path} data")
    if x.ndim == 2 and x.shape[1] == 3 * 32 * 32:
        x = x.reshape(-1, 3, 32, 32)  # rows are R, G, B planes of 32x32, row-major
    elif x.ndim != 4:
        raise DataError(f"{path}: expected data of shape (N, 3072) or (N, 3, 32, 32), found {x.shape}")
    if x.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 data, found {x.dtype}")
    y = _to_numpy(d[label_key], f"{path} {label_key}")
    if len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y


def load_cifar(root: str | os.PathLike | None = None, variant: str | None = None) -> ArrayDataset:
    """CIFAR-10 or CIFAR-100 from the standard python-pickle batch folder.

    CIFAR-10: ``data_batch_1..5`` and ``test_batch`` (labels under ``b"labels"``); CIFAR-100:
    ``train`` and ``test`` (labels under ``b"fine_labels"``). ``root`` may also be the folder above
    ``cifar-10-batches-py`` / ``cifar-100-python``. ``variant`` ("cifar10"/"cifar100") is detected
    from the files when None. The pickles are read by an unpickler that refuses every global but
    numpy's array constructors, so a hostile file raises ``DataError`` instead of running code.
    """
    if variant not in (None, "cifar10", "cifar100"):
        raise DataError(f"CIFAR variant must be 'cifar10' or 'cifar100', found {variant!r}")
    env = DATASET_ENV[variant or "cifar10"]
    folder = _resolve_root(root, env, None)
    how = (
        "Pass the extracted python-version folder (cifar-10-batches-py with data_batch_1..5 and "
        f"test_batch, or cifar-100-python with train and test) as {_ROOT} or ${env}."
    )
    name = variant or "cifar"
    if folder is None:
        raise _not_found(f"{name}: no folder given. {how}")
    if not folder.is_dir():
        raise _not_found(f"{name}: folder {folder} does not exist. {how}")
    for sub, sub_variant in (("cifar-10-batches-py", "cifar10"), ("cifar-100-python", "cifar100")):
        if (folder / sub).is_dir() and variant in (None, sub_variant):
            folder = folder / sub
            break
    is10 = (folder / "data_batch_1").is_file()
    is100 = (folder / "train").is_file()
    if variant is None:
        variant = "cifar10" if is10 else "cifar100" if is100 else None
    if variant == "cifar10":
        files = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    elif variant == "cifar100":
        files = [folder / "train", folder / "test"]
    else:
        raise _not_found(f"{name}: {folder} holds neither data_batch_1 (CIFAR-10) nor train (CIFAR-100). {how}")
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise _not_found(f"{variant}: {folder} lacks {', '.join(missing)}. {how}")
    label_key = "labels" if variant == "cifar10" else "fine_labels"
    parts = [_read_cifar_batch(p, label_key) for p in files]
    train, test = parts[:-1], parts[-1]
    return ArrayDataset(
        np.concatenate([x for x, _ in train]), np.concatenate([np.asarray(y) for _, y in train]),
        test[0], test[1],
        name=variant, num_classes=10 if variant == "cifar10" else 100,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# .npz and user hooks


def load_npz(path: str | os.PathLike, name: str | None = None) -> ArrayDataset:
    """An ``.npz`` holding ``x_train, y_train, x_test, y_test``, read with ``allow_pickle=False``.

    Images may be NHW, NHWC (C in {1, 3}) or NCHW. An optional scalar ``num_classes`` key is honoured.
    Object arrays (which would need pickle) are refused with ``DataError``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"npz data set {path} does not exist; it must hold the arrays {', '.join(_NPZ_KEYS)}")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: expected an .npz archive, found a single .npy array")
        with z:
            missing = [k for k in _NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path}: expected keys {', '.join(_NPZ_KEYS)}, found {sorted(z.files)}")
            arrays = {k: z[k] for k in _NPZ_KEYS}
            num_classes = int(z["num_classes"]) if "num_classes" in z.files else None
    except DataError:
        raise
    except Exception as exc:  # object arrays (ValueError), bad zips, truncated members  # noqa: BLE001
        raise DataError(f"{path}: cannot read npz data set ({type(exc).__name__}: {exc})") from exc
    return _dataset(arrays, name=name or path.stem, num_classes=num_classes)


def _from_hook_result(result: Any, spec: str) -> ArrayDataset:
    if isinstance(result, ArrayDataset):
        return result
    name = spec.rsplit(":", 1)[-1]
    if isinstance(result, Mapping):
        missing = [k for k in _NPZ_KEYS if k not in result]
        if missing:
            raise DataError(
                f"hook {spec}: the returned dict needs keys {', '.join(_NPZ_KEYS)}, found {sorted(map(str, result))}"
            )
        extra = {k: result[k] for k in ("name", "num_classes", "mean", "std") if k in result}
        extra.setdefault("name", name)
        return _dataset(result, **extra)
    if isinstance(result, Sequence) and not isinstance(result, (str, bytes)):
        if len(result) == 4:
            return _dataset(dict(zip(_NPZ_KEYS, result, strict=True)), name=name)
        if len(result) == 2 and all(isinstance(p, Sequence) and len(p) == 2 for p in result):
            (xtr, ytr), (xte, yte) = result
            return ArrayDataset(xtr, ytr, xte, yte, name=name)
    raise DataError(
        f"hook {spec}: expected an ArrayDataset, a dict with {', '.join(_NPZ_KEYS)}, a 4-tuple "
        f"(x_train, y_train, x_test, y_test) or ((x_train, y_train), (x_test, y_test)); found {type(result).__name__}"
    )


def load_hook(spec: str, *args: Any, **kwargs: Any) -> ArrayDataset:
    """Import ``module`` and call ``function(*args, **kwargs)`` from a ``"module:function"`` spec.

    This runs the user's code: it is an explicit choice of whoever passes the spec, exactly like
    ``python -c``. The function returns an ``ArrayDataset``, a dict with ``x_train, y_train, x_test,
    y_test`` (optionally ``name, num_classes, mean, std``), a 4-tuple of those arrays, or
    ``((x_train, y_train), (x_test, y_test))``. Arrays may be numpy arrays or torch tensors.
    """
    if not is_reference(spec):
        raise DataError(f"a data hook must look like 'package.module:function', found {spec!r}")
    result = call_reference(spec, *args, role="data hook", **kwargs)
    return _from_hook_result(result, spec)


def get_dataset(spec: str, root: str | os.PathLike | None = None) -> ArrayDataset:
    """The data set named by ``spec``: the one entry point for the CLI.

    ``spec`` is ``fashion-mnist`` (alias ``fmnist``), ``mnist``, ``cifar10``, ``cifar100``, a path
    ending in ``.npz``, or ``module:function``.

    ``root`` is the data folder for the named sets (ignored for ``.npz``, which is a path itself);
    for a hook it is passed as the single argument when given. Unknown specs raise ``DataError``
    listing the accepted forms.
    """
    s = str(spec).strip()
    key = s.lower().replace("_", "-")
    if key in ("fashion-mnist", "fmnist", "fashionmnist"):
        return load_fashion_mnist(root)
    if key == "mnist":
        return load_mnist(root)
    if key in ("cifar10", "cifar-10"):
        return load_cifar(root, "cifar10")
    if key in ("cifar100", "cifar-100"):
        return load_cifar(root, "cifar100")
    if key.endswith(".npz"):
        return load_npz(s)
    if is_reference(s):
        return load_hook(s) if root is None else load_hook(s, root)
    raise DataError(f"unknown data set {spec!r}; expected one of: {', '.join(DATASET_SPECS)}")


# ----------------------------------------------------------------------------------------------
# Batches

_SHUFFLE_STREAM = 0x5348  # "SH": keeps the shuffle and augmentation seeds apart
_AUGMENT_STREAM = 0x4147  # "AG"


def _derive_seed(*words: int) -> int:
    """A 63-bit torch seed from small non-negative integers (numpy's SeedSequence: stable across versions)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def epoch_indices(n: int, *, epoch: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                  batch_size: int = 1, drop_last: bool = False) -> torch.Tensor:
    """The sample indices rank ``rank`` of ``world_size`` takes in ``epoch``, in order: a pure function of
    its arguments (``BatchLoader`` and the pipeline's loader over a torch ``Dataset`` share it).

    ``shuffle``: ``torch.randperm`` under a generator seeded by ``(seed, epoch)``, the same on every rank.
    Rank ``r`` takes every ``world_size``-th index starting at ``r``. Without ``drop_last`` the order is
    padded by wrapping around so every rank gets ``ceil(n / world_size)`` samples; with it the tail is
    dropped (``floor``) and so is a last partial batch of ``batch_size``.
    """
    if shuffle:
        g = torch.Generator().manual_seed(_derive_seed(seed, epoch, _SHUFFLE_STREAM))
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    per_rank = n // world_size if drop_last else -(-n // world_size)
    total = per_rank * world_size
    if total > n:  # pad by wrapping around so every rank has as many samples
        order = torch.cat([order, order.repeat(-(-(total - n) // n))[: total - n]])
    mine = order[:total][rank::world_size]
    return mine[: (per_rank // batch_size) * batch_size] if drop_last else mine


def _crop_flip(x: torch.Tensor, pad: int, offsets: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop each (C, H, W) image of ``x`` at ``offsets`` (B, 2) = (top, left) from its copy
    zero-padded by ``pad`` pixels, mirrored left-right where ``flip`` (B,) is true: one gather."""
    B, C, H, W = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad)) if pad else x  # (B, C, H+2p, W+2p), zeros
    Wp = W + 2 * pad
    ar_h = torch.arange(H, device=x.device)
    ar_w = torch.arange(W, device=x.device)
    rows = offsets[:, 0:1] + ar_h  # (B, H)
    cols = offsets[:, 1:2] + torch.where(flip[:, None], W - 1 - ar_w, ar_w)  # (B, W)
    flat = (rows[:, :, None] * Wp + cols[:, None, :]).view(B, 1, H * W).expand(B, C, H * W)
    return torch.gather(xp.reshape(B, C, -1), 2, flat).view(B, C, H, W)


class BatchLoader:
    """Iterate ``(x, y)`` torch batches over numpy arrays, vectorised per batch.

    * x is converted to float32 and normalised ``(x - mean) / std`` per channel (a zero std counts as 1);
      y is int64.
    * ``crop_padding > 0``: random crop from the image zero-padded by that many pixels (in the
      stored units, before normalisation, as in the usual pipelines); ``hflip``: mirror half the
      images. Both are drawn per batch from a generator seeded by ``(seed, epoch, rank)``.
    * ``shuffle``: the epoch order is ``torch.randperm`` under a generator seeded by ``(seed, epoch)``,
      the same on every rank; call ``set_epoch(e)`` before each epoch (iterating does not advance it).
    * ``rank``/``world_size``: rank ``r`` takes every ``world_size``-th index of the epoch order
      starting at ``r``. Without ``drop_last`` the order is padded by wrapping around so every rank
      gets ``ceil(N / world_size)`` samples; with it the tail is dropped (``floor``) and so is a last
      partial batch. All ranks yield the same number of batches.

    Iterating the same epoch twice yields identical batches.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_padding: int = 0,
        hflip: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device | None = None,
        pin_memory: bool = False,
    ) -> None:
        x = _to_numpy(x, "BatchLoader x")
        y = _to_numpy(y, "BatchLoader y")
        if x.ndim != 4:
            raise DataError(f"BatchLoader: expected images (N, C, H, W), found shape {x.shape}")
        if len(x) != len(y) or len(x) < 1:
            raise DataError(
                "BatchLoader: expected as many labels as images (at least 1), "
                f"found {len(x)} images and {len(y)} labels"
            )
        if int(batch_size) < 1:
            raise DataError(f"BatchLoader: batch_size must be >= 1, found {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise DataError(f"BatchLoader: need 0 <= rank < world_size, found rank={rank}, world_size={world_size}")
        if int(crop_padding) < 0:
            raise DataError(f"BatchLoader: crop_padding must be >= 0, found {crop_padding}")
        if int(seed) < 0:
            raise DataError(f"BatchLoader: seed must be >= 0, found {seed}")
        C = x.shape[1]
        mean = [0.0] * C if mean is None else [float(v) for v in mean]
        std = [1.0] * C if std is None else [float(v) for v in std]
        if len(mean) != C or len(std) != C:
            raise DataError(f"BatchLoader: mean and std need {C} values, found {len(mean)} and {len(std)}")
        # torch.from_numpy shares memory; it needs a writable, C-contiguous array of a torch dtype.
        self._x = torch.from_numpy(np.require(x, requirements=["C", "W"]))
        self._y = torch.from_numpy(np.require(y.astype(np.int64, copy=False), requirements=["C", "W"]))
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)
        self.drop_last = bool(drop_last)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.pin_memory = bool(pin_memory) and self.device.type == "cuda"
        self.mean = tuple(mean)
        self.std = tuple(std)
        inv = [1.0 / s if s > 0 else 1.0 for s in std]
        self._inv_std_t = torch.tensor(inv, dtype=torch.float32, device=self.device).view(1, C, 1, 1)
        self._mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, C, 1, 1)
        self.epoch = 0

    @classmethod
    def from_dataset(cls, dataset: ArrayDataset, split: str = "train", **kwargs: Any) -> BatchLoader:
        """A loader over ``dataset``'s ``"train"`` or ``"test"`` split, normalised with the dataset's mean/std."""
        if split not in ("train", "test"):
            raise DataError(f"split must be 'train' or 'test', found {split!r}")
        x, y = (dataset.x_train, dataset.y_train) if split == "train" else (dataset.x_test, dataset.y_test)
        kwargs.setdefault("mean", dataset.mean)
        kwargs.setdefault("std", dataset.std)
        return cls(x, y, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration yields."""
        if int(epoch) < 0:
            raise DataError(f"epoch must be >= 0, found {epoch}")
        self.epoch = int(epoch)

    @property
    def dataset_size(self) -> int:
        """Samples in the underlying arrays (all ranks)."""
        return len(self._y)

    @property
    def _per_rank(self) -> int:
        n, w = self.dataset_size, self.world_size
        return n // w if self.drop_last else -(-n // w)

    @property
    def num_samples(self) -> int:
        """Samples this rank yields per epoch."""
        return len(self) * self.batch_size if self.drop_last else self._per_rank

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        per = self._per_rank
        return per // self.batch_size if self.drop_last else -(-per // self.batch_size)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """The sample indices this rank yields in ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else int(epoch)
        return epoch_indices(self.dataset_size, epoch=epoch, shuffle=self.shuffle, seed=self.seed, rank=self.rank,
                             world_size=self.world_size, batch_size=self.batch_size, drop_last=self.drop_last)

    def unaugmented(self, batch_size: int | None = None) -> BatchLoader:
        """Every sample of the arrays once, in order, normalised like this loader's, never augmented
        (all ranks' samples; what a cache of per-sample outputs reads)."""
        return BatchLoader(self._x.numpy(), self._y.numpy(), batch_size=batch_size or self.batch_size,
                           mean=self.mean, std=self.std, device=self.device)  # fmt: skip

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches_from(0)

    def batches_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The current epoch's batches from batch ``start`` on, exactly as iterating yields them (a
        resumed run continues mid-epoch without building the batches before ``start``)."""
        idx = self.indices()
        aug = torch.Generator().manual_seed(_derive_seed(self.seed, self.epoch, self.rank, _AUGMENT_STREAM))
        p = self.crop_padding
        for i in range(len(self)):
            if i < start:  # the augmentation draws of the skipped batches, so that later ones are the same
                if p or self.hflip:
                    B = len(idx[i * self.batch_size : (i + 1) * self.batch_size])
                    if p:
                        torch.randint(0, 2 * p + 1, (B, 2), generator=aug)
                    if self.hflip:
                        torch.rand(B, generator=aug)
                continue
            bi = idx[i * self.batch_size : (i + 1) * self.batch_size]
            xb, yb = self._x.index_select(0, bi), self._y.index_select(0, bi)  # (B, C, H, W) raw, (B,): copies
            if self.device.type != "cpu":
                if self.pin_memory:
                    xb, yb = xb.pin_memory(), yb.pin_memory()
                xb = xb.to(self.device, non_blocking=self.pin_memory)
                yb = yb.to(self.device, non_blocking=self.pin_memory)
            if p > 0 or self.hflip:  # drawn on CPU, in a fixed order, so batches do not depend on the device
                B = len(bi)
                offsets = torch.zeros(B, 2, dtype=torch.int64)  # (top, left) in the padded image
                if p:
                    offsets = torch.randint(0, 2 * p + 1, (B, 2), generator=aug)
                flip = torch.rand(B, generator=aug) < 0.5 if self.hflip else torch.zeros(B, dtype=torch.bool)
                xb = _crop_flip(xb, p, offsets.to(self.device), flip.to(self.device))  # still raw units
            xb = xb.to(torch.float32).sub_(self._mean_t).mul_(self._inv_std_t)  # (x - mean) / std
            yield xb, yb
