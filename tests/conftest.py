"""Shared test fixtures."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with one torch thread (restored afterwards).

    The tests use tiny tensors; on a busy 2-core machine intra-op threads only add contention (ops
    measured up to 40x slower with 2 threads). Use with ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


REPO = Path(__file__).resolve().parents[1]


def edit_pemn(blob: bytes, *, header=None, tensors=None, metadata=None, text: str | None = None,
              resign: bool = True) -> bytes:
    """A `.pemn` file (any version) with its parts changed, re-signed as a writer would sign it.

    ``tensors(dict)`` edits the data tensors (the version 2 ``header`` tensor is not among them),
    ``header(dict)`` the PEMN header object, ``metadata(dict)`` the final metadata; ``text`` replaces
    the header text outright. ``resign``: recompute ``checksums.data`` (formats/pemn-v1.md section 6.2,
    pemn-v2.md section 5) and the header hash (and, version 2, ``pemn.header_bytes``), after the edits.
    Written here with the container codec, zlib and hashlib: a test's file is not the writer's.
    """
    import hashlib
    import json
    import zlib

    from pemn_compress.fileformat.container import decode_container, encode_container

    found, meta = decode_container(blob)
    meta = dict(meta)
    version = meta["pemn.version"]
    data = {name: np.array(t) for name, t in found.items() if not (version != "1" and name == "header")}
    if version != "1":
        head = json.loads(zlib.decompress(found["header"].tobytes(), -15))
    else:
        head = json.loads(meta["pemn.header"])
    if tensors:
        tensors(data)
    if header:
        header(head)
    if resign:
        digest = hashlib.sha256()
        for name in sorted(data, key=lambda n: (-data[n].dtype.itemsize, n)):  # the writer's layout order
            digest.update(data[name].tobytes())
        head["checksums"]["data"] = digest.hexdigest()
    if text is None:
        text = json.dumps(head, sort_keys=True, separators=(",", ":"), allow_nan=True)
    encoded = text.encode("utf-8", "surrogatepass")
    if version != "1":
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        data["header"] = np.frombuffer(packer.compress(encoded) + packer.flush(), dtype=np.uint8)
        if resign:
            meta["pemn.header_bytes"] = str(len(encoded))
    else:
        meta["pemn.header"] = text
    if resign:
        meta["pemn.header_sha256"] = hashlib.sha256(encoded).hexdigest()
    if metadata:
        metadata(meta)
    return encode_container(data, meta)


def load_script(relative: str, name: str) -> ModuleType:
    """Import a script of ``formats/`` (``reference_reader.py``) from its file, as module ``name``: it is a
    script, not a package module, and no test edits ``sys.path``. Benchmark scripts are run, not imported
    (``run_script``)."""
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickles look their module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def run_script(relative: str, *args, expect: int | None = 0, env: dict | None = None):
    """``python <relative> ARGS`` as a user types it in the repository root (a benchmark script runs as a
    program, not imported); asserts the exit code unless None. Returns the CompletedProcess (text)."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, relative, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=600)  # fmt: skip
    if expect is not None:
        assert result.returncode == expect, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="session")
def reference_reader() -> ModuleType:
    """formats/reference_reader.py: the numpy-only reader written from the spec, not from the package.

    The independent oracle of the tests: expected values come from it (or from hand computation),
    not from re-running the package's own code. Loaded from its file (it is not a package module).
    """
    return load_script("formats/reference_reader.py", "pemn_reference_reader")


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file (magic 0x00000803/0x00000801, big-endian dims, uint8 data)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


@pytest.fixture(scope="session")
def fmnist_subset(tmp_path_factory) -> Path:
    """A real Fashion-MNIST subset (2000 train / 500 test) as an IDX folder: fast to load and evaluate."""
    from pemn_compress.data import get_dataset

    data = get_dataset("fashion-mnist").subset(2000, 500, seed=0)
    folder = tmp_path_factory.mktemp("fmnist")
    write_idx(folder / "train-images-idx3-ubyte", data.x_train[:, 0])
    write_idx(folder / "train-labels-idx1-ubyte", data.y_train)
    write_idx(folder / "t10k-images-idx3-ubyte", data.x_test[:, 0])
    write_idx(folder / "t10k-labels-idx1-ubyte", data.y_test)
    return folder


@pytest.fixture
def fmnist_cwd(fmnist_subset, tmp_path, monkeypatch):
    """A fresh working folder in which the named data set ``fashion-mnist`` is the real subset."""
    monkeypatch.setenv("PEMN_FASHION_MNIST_DIR", str(fmnist_subset))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_compress(*args, expect: int | None = 0):
    """``pemn compress ARGS`` as typed (click's runner, in process); asserts the exit code unless None."""
    from click.testing import CliRunner

    from pemn_compress.commands import compress

    result = CliRunner().invoke(compress, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def trained_tensors(path) -> dict:
    """What training decides in a `.pemn` file: its masks and stored tensors, without the header (whose
    provenance records the options that produced it)."""
    import pemn_compress as pemn

    return {name: t for name, t in pemn.read_pemn(path).tensors.items() if name != "header"}


def read_csv(path) -> list[dict]:
    """A results CSV as a list of rows (every value a string, as written)."""
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
