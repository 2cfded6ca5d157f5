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
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .config import DISTRIBUTIONS
from .errors import ConfigError

if TYPE_CHECKING:  # annotations only: the numpy half of this module works without torch
    import torch

__all__ = [
    "DISTRIBUTIONS",
    "GENERATOR",
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


def unit_values_into(out: np.ndarray, seed: int, stream: int, start: int, distribution: str = "normal") -> np.ndarray:
    """Write the unit values of elements ``start .. start+len(out)-1`` into the float32 array ``out``.

    The fused CPU kernel: Philox rounds and the float mapping on uint64 arrays of ``len(out)`` entries,
    in place, without the (count, 4) word array. Same bits as ``_unit_from_words_numpy(philox4x32_numpy(...))``
    (pinned by tests/test_rng.py). Pass cache-sized pieces (``_NUMPY_CHUNK``); it releases the GIL
    in every numpy call, so pieces run in parallel on threads.
    """
    _check_key(seed, stream)
    _check_distribution(distribution)
    if out.dtype != np.float32 or out.ndim != 1:
        raise ConfigError(f"out must be a 1-D float32 array, found {out.dtype} with {out.ndim} dims")
    count = out.shape[0]
    if start < 0 or start + count > 1 << 64:
        raise ConfigError(f"element indices [{start}, {start + count}) are outside the generator's range")
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


def _check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"unknown value distribution {distribution!r}; expected one of {DISTRIBUTIONS}")


def _use_torch_kernel(device, kernel: str) -> bool:
    if kernel not in ("auto", "numpy", "torch"):
        raise ConfigError(f"kernel must be 'auto', 'numpy' or 'torch', found {kernel!r}")
    if kernel == "auto":  # numpy is the faster of the two on a CPU; torch runs on the accelerator
        return device is not None and str(device).split(":")[0] != "cpu"
    return kernel == "torch"


def unit_values(seed: int, stream: int, count: int, distribution: str = "normal", *, device=None, kernel="auto"):
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

    out = np.empty(count, dtype=np.float32)

    def fill(start: int, end: int) -> None:
        unit_values_into(out[start:end], seed, stream, start, distribution)

    for_chunks(fill, count, _NUMPY_CHUNK)
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
