"""The bit-exact value generator shared by training, saving and loading.

Everything a `.pemn` file does not store explicitly is regenerated from here, so this module is
the heart of the format's promise: the same ``(seed, stream, index)`` gives the same float32 bits
in numpy, in torch on CPU and in torch on CUDA, on any machine, with any thread count and any
library version. To keep that promise it uses only:

* **Philox4x32-10** (Salmon et al., SC'11), a counter-based generator defined by 32-bit integer
  multiplications, XORs and additions. Word ``j`` (0..3) of element ``i`` of stream ``s`` under
  seed ``K`` is word ``j`` of ``philox4x32_10(counter=(i_lo, i_hi, s_lo, s_hi), key=(K_lo, K_hi))``.
  The torch path splits each 32x32-bit product into 16-bit halves so no intermediate exceeds 2**53
  and signed 64-bit overflow never happens.
* **Exact integer-to-float mappings** that use only operations IEEE 754 rounds correctly
  (integer-to-float64 conversion of integers below 2**53, one float64 multiplication, one cast to
  float32). See ``unit_values`` for the three distributions.
* A final float32 multiplication by the layer's float32 scale (``scaled_values``), again one
  correctly rounded operation.

The format spec (formats/pemn-v1.md) restates these definitions; the numpy half of this module is
mirrored in the standalone reference reader.

**CPU generators.** The numpy kernel (``unit_values_into``) is the oracle and always available. When
numba is installed (``pip install pemn-compress[fast]``), ``pemn_compress._numba`` computes the same
bits about 10x faster but pays a one-time cost per process (import and JIT compile or cache load). Which
one runs is decided by ``choose_generator(count)`` from the environment variable ``PEMN_GENERATOR``, read at
every call:

* ``auto`` (default, or unset): numba when it is importable and either already compiled in this
  process or the job generates at least ``NUMBA_MIN_VALUES`` values (the break-even, see there);
  numpy otherwise, and for the rest of the process if numba fails to import or compile;
* ``numpy``: always the numpy kernel (the fallback, and the oracle the tests compare against);
* ``numba``: always numba; a ConfigError when it is unavailable.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

from .config import DISTRIBUTIONS
from .errors import ConfigError

if TYPE_CHECKING:  # annotations only: the numpy half of this module works without torch
    import torch

__all__ = [
    "DISTRIBUTIONS",
    "GENERATOR",
    "GENERATORS",
    "NUMBA_MIN_VALUES",
    "choose_generator",
    "philox4x32_numpy",
    "philox4x32_torch",
    "permutation",
    "scaled_values",
    "unit_bound",
    "unit_values",
    "unit_values_into",
]

GENERATOR = "philox4x32-10"  # the generator's name in a .pemn header (formats/pemn-v1.md 6.2, section 8)

_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
_MASK32 = 0xFFFFFFFF
_ROUNDS = 10

# float64 constants, each the correctly rounded value of the expression beside it.
_U24 = 1 << 24
_NORMAL_MEAN = 2 * (_U24 - 1)  # mean of the sum of four 24-bit uniforms (an integer)
_NORMAL_INV_STD = 1.0 / math.sqrt(((1 << 48) - 1) / 3.0)  # 1 / std of that sum
_UNIFORM_MUL = math.sqrt(3.0) / _U24  # maps 2u + 1 - 2**24 onto (-sqrt 3, sqrt 3): unit variance


def _check_key(seed: int, stream: int) -> None:
    for name, value in (("seed", seed), ("stream", stream)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, found {value!r}")
    if not (0 <= int(seed) < 1 << 64):
        raise ConfigError(f"seed must be an integer in [0, 2**64), found {seed}")
    if not (0 <= int(stream) < 1 << 64):
        raise ConfigError(f"stream must be an integer in [0, 2**64), found {stream}")


def _philox_rounds_numpy(seed: int, stream: int, start: int, count: int) -> tuple[np.ndarray, ...]:
    """The four Philox4x32-10 output words of elements ``start .. start+count-1``, each a uint64 array
    of ``count`` entries holding a 32-bit value (every 32x32-bit product fits exactly), computed in
    place with two scratch buffers."""
    u = np.uint64
    mask, shift = u(_MASK32), u(32)
    c0 = np.arange(start, start + count, dtype=np.uint64)
    c1 = c0 >> shift
    c0 &= mask
    c2, c3 = np.full(count, u(stream & _MASK32)), np.full(count, u(stream >> 32))
    p0, p1 = np.empty(count, dtype=np.uint64), np.empty(count, dtype=np.uint64)
    k0, k1 = seed & _MASK32, seed >> 32
    for _ in range(_ROUNDS):
        np.multiply(c0, u(_M0), out=p0)  # exact: both factors < 2**32
        np.multiply(c2, u(_M1), out=p1)
        np.right_shift(p1, shift, out=c0)  # c0' = hi(p1) ^ c1 ^ k0
        c0 ^= c1
        c0 ^= u(k0)
        np.bitwise_and(p1, mask, out=c1)  # c1' = lo(p1)
        np.right_shift(p0, shift, out=c2)  # c2' = hi(p0) ^ c3 ^ k1
        c2 ^= c3
        c2 ^= u(k1)
        np.bitwise_and(p0, mask, out=c3)  # c3' = lo(p0)
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


# --------------------------------------------------------------------------------------- numpy
def philox4x32_numpy(seed: int, stream: int, start: int, count: int) -> np.ndarray:
    """Philox4x32-10 words for elements ``start .. start+count-1``: uint32 array (count, 4).

    Written for speed with plain uint64 numpy arrays (every 32x32-bit product fits exactly) and
    in-place operations; callers pass cache-sized chunks (see ``_NUMPY_CHUNK``).
    """
    _check_key(seed, stream)
    c0, c1, c2, c3 = _philox_rounds_numpy(seed, stream, start, count)
    out = np.empty((count, 4), dtype=np.uint32)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = c0, c1, c2, c3
    return out


def _unit_from_words_numpy(words: np.ndarray, distribution: str) -> np.ndarray:
    """Unit values from a (count, 4) word array: the mapping written out plainly (see ``unit_values``)."""
    w = words.astype(np.int64)
    if distribution == "normal":
        s = (w >> 8).sum(axis=1) - _NORMAL_MEAN  # exact integer, |s| < 2**26
        return (s.astype(np.float64) * _NORMAL_INV_STD).astype(np.float32)
    if distribution == "uniform":
        u = w[:, 0] >> 8
        return ((2 * u + 1 - _U24).astype(np.float64) * _UNIFORM_MUL).astype(np.float32)
    if distribution == "signed_constant":
        return np.where(w[:, 0] >> 31 == 1, np.float32(-1.0), np.float32(1.0)).astype(np.float32)
    raise ConfigError(f"unknown value distribution {distribution!r}; expected one of {DISTRIBUTIONS}")


# ------------------------------------------------------------------------------ generator choice
GENERATORS = ("auto", "numpy", "numba")  # values of PEMN_GENERATOR
# Break-even of numba in a fresh process (benchmarks/results/generator_candidates_cpu.md, 2 shared cores):
# its first use costs ~0.29 s (import numba + load the compiled kernel from numba's warm on-disk cache;
# ~0.53 s on a cold cache, once per installation) and ~100 MB of resident memory (llvmlite), after which
# it makes ~400-750 M values/s per core against numpy's ~50 M. It saves n * (1/50M - 1/600M) s on n
# values: 0.29 s at n ~ 16M on paper, and measured (fresh-process pemn.load, linear_stack 4096x4):
# 16.8M values generated (onelayer) 1.02 s numpy vs 1.20 s numba, no gain; 67M (dense) 2.50 s vs 1.10 s.
# So auto takes numba from 2**25 values (~33.5M: past the break-even with a margin for the memory), and,
# once compiled in the process, for every job whatever its size.
NUMBA_MIN_VALUES = 1 << 25


def _numba_importable() -> bool:
    import importlib.util

    from . import _numba

    return _numba.error() is None and importlib.util.find_spec("numba") is not None


def choose_generator(count: int) -> str:
    """The CPU generator, ``"numpy"`` or ``"numba"``, for a job generating ``count`` values in all.

    Reads ``PEMN_GENERATOR`` (``auto``, ``numpy`` or ``numba``; see the module docstring) now. In
    ``auto``, the choice of numba compiles it (here, once per process, not inside the job's threads);
    if that fails the answer is numpy. Raises ConfigError for another value of ``PEMN_GENERATOR``, or
    ``numba`` without a working numba.
    """
    choice = os.environ.get("PEMN_GENERATOR", "").strip().lower() or "auto"
    if choice not in GENERATORS:
        raise ConfigError(f"PEMN_GENERATOR must be one of {GENERATORS}, found {choice!r}")
    if choice == "numpy":
        return "numpy"
    from . import _numba

    if choice == "auto" and not (_numba.compiled() or (count >= NUMBA_MIN_VALUES and _numba_importable())):
        return "numpy"
    try:
        _numba.kernel()
    except ImportError as exc:
        if choice == "numba":
            raise ConfigError(f"PEMN_GENERATOR=numba, but {exc} (pip install pemn-compress[fast])") from exc
        return "numpy"
    return "numba"


def _check_generator(name: str) -> None:
    if name not in GENERATORS:
        raise ConfigError(f"generator must be one of {GENERATORS}, found {name!r}")


def unit_values_into(
    out: np.ndarray, seed: int, stream: int, start: int, distribution: str = "normal", *, generator: str = "auto"
) -> np.ndarray:
    """Write the unit values of elements ``start .. start+len(out)-1`` into the float32 array ``out``.

    ``generator``: ``"numpy"``, ``"numba"`` or ``"auto"`` (``choose_generator(len(out))`` decides: pass the
    decision made once for a whole job instead when ``out`` is one piece of it). Both give the same
    bits (pinned by tests/test_fast_generator.py); a non-contiguous ``out`` always takes numpy.

    The numpy kernel: Philox rounds and the float mapping on uint64 arrays of ``len(out)`` entries,
    in place, without the (count, 4) word array. Same bits as ``_unit_from_words_numpy(philox4x32_numpy(...))``
    (pinned by tests/test_rng.py). Pass cache-sized pieces (``_NUMPY_CHUNK``); it releases the GIL
    in every numpy call, so pieces run in parallel on threads. The numba kernel releases it too.
    """
    _check_key(seed, stream)
    _check_distribution(distribution)
    _check_generator(generator)
    if out.dtype != np.float32 or out.ndim != 1:
        raise ConfigError(f"out must be a 1-D float32 array, found {out.dtype} with {out.ndim} dims")
    count = out.shape[0]
    if start < 0 or start + count > 1 << 64:
        raise ConfigError(f"element indices [{start}, {start + count}) are outside the generator's range")
    if generator == "auto":
        generator = choose_generator(count)
    if generator == "numba" and out.flags.c_contiguous:
        from . import _numba

        try:
            _numba.fill_units(out, seed, stream, start, distribution)
        except ImportError as exc:
            raise ConfigError(f"generator 'numba' requested, but {exc} (pip install pemn-compress[fast])") from exc
        return out
    c0, c1, c2, c3 = _philox_rounds_numpy(seed, stream, start, count)
    u = np.uint64
    if distribution == "normal":
        for c in (c0, c1, c2, c3):
            c >>= u(8)
        c0 += c1
        c0 += c2
        c0 += c3  # < 2**26: exact
        s = c0.view(np.int64)
        s -= np.int64(_NORMAL_MEAN)
        f = s.astype(np.float64)
        f *= _NORMAL_INV_STD
    elif distribution == "uniform":
        s = c0.view(np.int64)
        s >>= 8
        s *= 2
        s += 1 - _U24
        f = s.astype(np.float64)
        f *= _UNIFORM_MUL
    else:  # signed_constant
        c0 >>= u(31)
        np.copyto(out, np.where(c0 == 1, np.float32(-1.0), np.float32(1.0)))
        return out
    np.copyto(out, f, casting="same_kind")  # float64 -> float32: one correctly rounded cast
    return out


# --------------------------------------------------------------------------------------- torch
def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product a*b, with b < 2**32 held in int64."""
    b_hi, b_lo = b >> 16, b & 0xFFFF
    p_lo = b_lo * a  # < 2**48
    p_hi = b_hi * a  # < 2**48
    t = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2**49
    return (t >> 32) + (p_hi >> 16), t & _MASK32


def philox4x32_torch(
    seed: int, stream: int, start: int, count: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Same words as ``philox4x32_numpy``, as an int64 tensor (count, 4) holding uint32 values."""
    import torch  # lazy: the numpy half of this module works without torch

    _check_key(seed, stream)
    if start + count > 1 << 62:
        raise ConfigError(f"element index {start + count} is beyond the generator's range")
    idx = torch.arange(start, start + count, dtype=torch.int64, device=device)
    c0, c1 = idx & _MASK32, idx >> 32
    c2 = torch.full_like(c0, stream & _MASK32)
    c3 = torch.full_like(c0, stream >> 32)
    k0, k1 = seed & _MASK32, seed >> 32
    for _ in range(_ROUNDS):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    return torch.stack([c0, c1, c2, c3], dim=1)


def _unit_from_words_torch(words: torch.Tensor, distribution: str) -> torch.Tensor:
    import torch

    if distribution == "normal":
        s = (words >> 8).sum(dim=1) - _NORMAL_MEAN
        return (s.to(torch.float64) * _NORMAL_INV_STD).to(torch.float32)
    if distribution == "uniform":
        u = words[:, 0] >> 8
        return ((2 * u + 1 - _U24).to(torch.float64) * _UNIFORM_MUL).to(torch.float32)
    if distribution == "signed_constant":
        neg = (words[:, 0] >> 31) == 1
        one = torch.ones((), dtype=torch.float32, device=words.device)
        return torch.where(neg, -one, one)
    raise ConfigError(f"unknown value distribution {distribution!r}; expected one of {DISTRIBUTIONS}")


# --------------------------------------------------------------------------------------- public
_CHUNK = 1 << 20  # elements per step on an accelerator: bounds the int64 temporaries (~32 MB)
_NUMPY_CHUNK = 1 << 16  # elements per step on the CPU: keeps the uint64 temporaries in cache (4x faster)
_NUMBA_CHUNK = 1 << 20  # elements per task of the numba kernel: no temporaries; amortizes the pool's per-task cost


def _check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"unknown value distribution {distribution!r}; expected one of {DISTRIBUTIONS}")


def _use_torch_kernel(device, kernel: str) -> bool:
    if kernel not in ("auto", "numpy", "torch"):
        raise ConfigError(f"kernel must be 'auto', 'numpy' or 'torch', found {kernel!r}")
    if kernel == "auto":  # numpy is the faster of the two on a CPU; torch runs on the accelerator
        return device is not None and str(device).split(":")[0] != "cpu"
    return kernel == "torch"


def unit_values(
    seed: int, stream: int, count: int, distribution: str = "normal", *, device=None, kernel="auto", generator="auto"
):
    """``count`` unit-variance float32 values of ``stream``.

    Returns a numpy array when ``device`` is None, else a torch tensor on ``device``. Both kernels
    give identical bits; ``kernel="auto"`` uses numpy on the CPU (the fused kernel, chunks spread over
    the CPU threads: measured 1.5-3x faster than the torch kernel on a CPU) and torch elsewhere.

    * ``normal``: Irwin-Hall(4): ``(sum_j (w_j >> 8) - 2*(2**24-1)) * c``, ``c = 1/sqrt((2**48-1)/3)``,
      computed in float64 then rounded once to float32. Bounded at +-3.46, otherwise very close to a
      standard normal.
    * ``uniform``: ``(2*(w_0 >> 8) + 1 - 2**24) * (sqrt(3) / 2**24)``: uniform on (-sqrt 3, sqrt 3).
    * ``signed_constant``: ``-1`` when the top bit of ``w_0`` is set, else ``+1``.
    """
    _check_distribution(distribution)
    if device is not None or kernel == "torch":
        import torch
    if count < 0:
        raise ConfigError(f"count must be >= 0, found {count}")
    if _use_torch_kernel(device, kernel):
        parts = [
            _unit_from_words_torch(philox4x32_torch(seed, stream, s, min(_CHUNK, count - s), device), distribution)
            for s in range(0, count, _CHUNK)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float32, device=device)
    from ._parallel import for_chunks

    _check_generator(generator)
    gen = choose_generator(count) if generator == "auto" else generator
    out = np.empty(count, dtype=np.float32)

    def fill(start: int, end: int) -> None:
        unit_values_into(out[start:end], seed, stream, start, distribution, generator=gen)

    for_chunks(fill, count, _NUMBA_CHUNK if gen == "numba" else _NUMPY_CHUNK)
    return out if device is None else torch.from_numpy(out).to(device)


def unit_bound(distribution: str) -> float:
    """The largest ``|unit value|`` a distribution can give (a float32 value, as a Python float).

    Invariant: ``abs(unit_values(K, s, n, distribution)[i]) <= unit_bound(distribution)`` for every
    seed, stream and index: the bound is the mapping of the extreme integer (``normal``: ``|t| <=
    2**25 - 2``; ``uniform``: ``|t| <= 2**24 - 1``), rounded as the mapping rounds, and rounding is
    monotone. Readers use it to refuse a layer scale that could overflow float32 before generating
    anything (formats/pemn-v1.md section 10).
    """
    _check_distribution(distribution)
    if distribution == "normal":
        return float(np.float32(float(2 * _U24 - 2) * _NORMAL_INV_STD))
    if distribution == "uniform":
        return float(np.float32(float(_U24 - 1) * _UNIFORM_MUL))
    return 1.0


def scaled_values(unit, scale: float):
    """Layer weights from unit values: one float32 multiplication by ``float32(scale)``."""
    if isinstance(unit, np.ndarray):
        return unit * np.float32(scale)
    import torch

    return unit * torch.tensor(scale, dtype=torch.float32, device=unit.device)


def permutation(seed: int, stream: int, n: int, *, device=None, kernel="auto"):
    """A seeded permutation of ``range(n)``: indices stably sorted by Philox word 0 of each index.

    Ties (equal 32-bit keys) keep index order, so numpy's and torch's stable sorts agree exactly.
    Returns int64 numpy (``device`` None) or a torch tensor on ``device``.
    """
    if n < 0:
        raise ConfigError(f"permutation length must be >= 0, found {n}")
    if device is not None or kernel == "torch":
        import torch
    if _use_torch_kernel(device, kernel):
        keys = [philox4x32_torch(seed, stream, s, min(_CHUNK, n - s), device)[:, 0] for s in range(0, n, _CHUNK)]
        keys_t = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.int64, device=device)
        return torch.sort(keys_t, stable=True).indices
    keys_n = [philox4x32_numpy(seed, stream, s, min(_NUMPY_CHUNK, n - s))[:, 0] for s in range(0, n, _NUMPY_CHUNK)]
    perm = np.argsort(np.concatenate(keys_n) if keys_n else np.zeros(0, np.uint32), kind="stable").astype(np.int64)
    return perm if device is None else torch.from_numpy(perm).to(device)
