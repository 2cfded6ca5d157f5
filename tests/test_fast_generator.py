"""The optional numba generator (pemn_compress._numba) against the numpy oracle (rng.unit_values_into).

Bit for bit (float32 bits compared as uint32) on every distribution, on the spec's known answers
(formats/pemn-v1.md 8.2), on (seed, stream, start) cases that set the high counter and key words or
cross a 32-bit counter boundary, on 1, 2 and 4 threads of the package's pool; whole files loaded with
numba forced and with numpy forced give identical weights, equal to the reference reader's. The
numba tests are skipped when numba is absent; the fallback tests run either way. One process: the
kernel compiles (or loads from numba's cache) once, ~0.2-0.6 s.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import pemn_compress as pemn
from pemn_compress import _numba, _parallel, rng, streaming
from pemn_compress.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HAS_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (pip install pemn-compress[fast])")

DISTRIBUTIONS = ("normal", "uniform", "signed_constant")
KAT = {  # formats/pemn-v1.md 8.2, seed 1234, stream 5, elements 0..7, float32 bits
    "normal": "3fd82f3c bfa51d81 be84b7e5 bf071fc1 3e2c5b58 be887fc6 3f5dbc42 bf174405",
    "signed_constant": "bf800000 3f800000 3f800000 bf800000 bf800000 3f800000 bf800000 3f800000",
    "uniform": "3fd2071c bef6e641 bf9abc74 3f634936 3fdb5094 bf896b9b 3ea35682 bdd7f25a",
}
COUNT = 10_007  # values per bit check: 11 pieces of 1,000 (the last one shorter)
CASES = [  # (seed, stream, start)
    (1234, 5, 0),
    (2**64 - 1, 2**64 - 1, 2**64 - COUNT),  # every key and stream bit set; counter word 1 all ones
    (2**63 + 12345, 2**32 + 7, 2**32 - 5_000),  # counter word 0 wraps into word 1 inside the range
    (42, 2**64 - 1, 2**40 + 3),
    (0xDEADBEEF_00000000, 0x80000000, 2**63 - 17),  # key word 0 zero, stream word 0 top bit, counter top bit
]


@functools.cache
def oracle(seed: int, stream: int, start: int, count: int, distribution: str) -> bytes:
    out = np.empty(count, dtype=np.float32)
    rng.unit_values_into(out, seed, stream, start, distribution, generator="numpy")
    return out.view(np.uint32).tobytes()


def test_constants_are_the_spec_and_rng_constants():
    assert np.float64(_numba.C_N).tobytes() == np.float64(rng._NORMAL_INV_STD).tobytes()
    assert np.float64(_numba.C_U).tobytes() == np.float64(rng._UNIFORM_MUL).tobytes()
    assert set(_numba.KIND) == set(rng.DISTRIBUTIONS)


@needs_numba
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_numba_gives_the_known_answers(distribution):
    got = rng.unit_values(1234, 5, 8, distribution, generator="numba")
    assert " ".join(f"{v:08x}" for v in got.view(np.uint32)) == KAT[distribution]


@needs_numba
@pytest.mark.parametrize("threads", ["1", "2", "4"])
@pytest.mark.parametrize("seed,stream,start", CASES)
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_numba_matches_numpy_bit_for_bit(monkeypatch, distribution, seed, stream, start, threads):
    monkeypatch.setenv("PEMN_THREADS", threads)
    got = np.full(COUNT, np.nan, dtype=np.float32)

    def fill(s: int, e: int) -> None:
        rng.unit_values_into(got[s:e], seed, stream, start + s, distribution, generator="numba")

    _parallel.for_chunks(fill, COUNT, 1000)  # 11 pieces on the package's pool
    assert got.view(np.uint32).tobytes() == oracle(seed, stream, start, COUNT, distribution)


@needs_numba
def test_numba_in_full_size_tasks_on_two_threads(monkeypatch):
    """The real task size (2**20 values) over several tasks, as a large load runs it."""
    monkeypatch.setenv("PEMN_THREADS", "2")
    n = 2 * rng._NUMBA_CHUNK + 4099
    got = rng.unit_values(7, 3, n, "normal", generator="numba")
    assert got.view(np.uint32).tobytes() == oracle(7, 3, 0, n, "normal")


def test_non_contiguous_output_takes_numpy(monkeypatch):
    monkeypatch.setattr(_numba, "fill_units", _forbidden)
    out = np.zeros(200, dtype=np.float32)
    rng.unit_values_into(out[::2], 9, 1, 5, "uniform", generator="numba")
    assert out[::2].view(np.uint32).tobytes() == oracle(9, 1, 5, 100, "uniform")


# ------------------------------------------------------------------------------- the choice
def _forbidden(*args, **kwargs):
    raise AssertionError("the numba kernel ran")


def test_choice_follows_the_environment(monkeypatch):
    monkeypatch.setenv("PEMN_GENERATOR", "numpy")
    assert rng.choose_generator(1 << 40) == "numpy"
    monkeypatch.setenv("PEMN_GENERATOR", "fortran")
    with pytest.raises(ConfigError, match="PEMN_GENERATOR"):
        rng.choose_generator(10)
    with pytest.raises(ConfigError, match="generator"):
        rng.unit_values(1, 2, 3, generator="fortran")


def test_auto_waits_for_the_break_even_until_compiled(monkeypatch):
    monkeypatch.delenv("PEMN_GENERATOR", raising=False)
    monkeypatch.setattr(_numba, "compiled", lambda: False)
    assert rng.choose_generator(rng.NUMBA_MIN_VALUES - 1) == "numpy"
    assert rng.choose_generator(rng.NUMBA_MIN_VALUES) == ("numba" if HAS_NUMBA else "numpy")


def test_a_failing_numba_falls_back_in_auto_and_is_refused_when_forced(monkeypatch):
    def broken():
        raise ImportError("the numba generator is unavailable: test")

    monkeypatch.setattr(rng, "_numba_importable", lambda: True)
    monkeypatch.setattr(_numba, "compiled", lambda: False)
    monkeypatch.setattr(_numba, "kernel", broken)
    monkeypatch.setenv("PEMN_GENERATOR", "auto")
    assert rng.choose_generator(1 << 40) == "numpy"
    monkeypatch.setenv("PEMN_GENERATOR", "numba")
    with pytest.raises(ConfigError, match="pemn-compress\\[fast\\]"):
        rng.choose_generator(1)


@needs_numba
def test_an_unwritable_cache_never_breaks_the_kernel(monkeypatch):
    """numba refuses ``cache=True`` (RuntimeError) when neither the package folder nor the user's cache
    folder is writable: the kernel is then compiled without a cache, and no warning reaches the user.
    (A read-only folder cannot be made here: the tests may run as root, who writes anyway.)"""
    import types

    import numba

    def njit(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function '_fill_units': no locator available for file")
        return numba.njit(**options)

    fake = types.SimpleNamespace(njit=njit, NumbaWarning=numba.NumbaWarning)
    monkeypatch.setitem(sys.modules, "numba", fake)
    monkeypatch.setattr(_numba, "_kernel", None)
    monkeypatch.setattr(_numba, "_error", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = np.empty(COUNT, dtype=np.float32)
        _numba.fill_units(out, 1234, 5, 0, "normal")
    assert out.view(np.uint32).tobytes() == oracle(1234, 5, 0, COUNT, "normal")


# ------------------------------------------------------------------------------- whole files
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(37, 61)
        self.fc2 = nn.Linear(61, 61)
        self.fc3 = nn.Linear(61, 61)
        self.head = nn.Linear(61, 9)

    def forward(self, x):
        return self.head(self.fc3(self.fc2(self.fc1(x))))


FILES = {
    "dense_normal": dict(strategy="dense"),
    "onelayer_uniform": dict(strategy="onelayer", distribution="uniform"),  # a bank shared by fc2 and fc3
    "mp_signed": dict(strategy="mp", distribution="signed_constant", density=0.05),  # rice masks
}


def _write(tmp_path, name: str):
    torch.manual_seed(0)
    return pemn.save(pemn.mask_(Net(), pemn.MaskConfig(seed=2**63 - 3, **FILES[name])), tmp_path / f"{name}.pemn")


def _load_bits(path) -> dict[str, bytes]:
    model = pemn.load(path, device="cpu", model=Net())  # verifies the fingerprint
    return {n: m.weight.detach().numpy().view(np.uint32).tobytes() for n, m in model.named_children()}


@needs_numba
@pytest.mark.parametrize("name", sorted(FILES))
def test_file_loads_the_same_with_numba_and_numpy(tmp_path, monkeypatch, reference_reader, name):
    monkeypatch.setattr(streaming, "PIECE", 64)  # many pieces, most ending inside a mask byte
    monkeypatch.setenv("PEMN_THREADS", "2")
    path = _write(tmp_path, name)
    monkeypatch.setenv("PEMN_GENERATOR", "numba")
    with_numba = _load_bits(path)
    monkeypatch.setenv("PEMN_GENERATOR", "numpy")
    monkeypatch.setattr(_numba, "fill_units", _forbidden)
    with_numpy = _load_bits(path)
    expected = {n: w.view(np.uint32).tobytes() for n, w in reference_reader.read(path)["weights"].items()}
    assert with_numba == with_numpy == expected


@pytest.mark.parametrize("name", sorted(FILES))
def test_numpy_fallback_loads_the_reference_weights(tmp_path, monkeypatch, reference_reader, name):
    """``PEMN_GENERATOR=numpy`` (and a process without numba) loads with the numpy kernel alone."""
    monkeypatch.setenv("PEMN_GENERATOR", "numpy")
    monkeypatch.setattr(_numba, "fill_units", _forbidden)
    monkeypatch.setattr(_numba, "kernel", _forbidden)
    path = _write(tmp_path, name)
    expected = {n: w.view(np.uint32).tobytes() for n, w in reference_reader.read(path)["weights"].items()}
    assert _load_bits(path) == expected
