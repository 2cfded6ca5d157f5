"""The optional numba generator: ``rng.unit_values_into``'s numpy unit values, bit for bit, about 10x faster.

Imported lazily by ``rng`` only, and numba itself is imported on first use (``kernel``), so a process that
never generates a large table never pays for it; install it with ``pip install pemn-compress[fast]``.
``rng.choose_generator`` decides when it is used (``PEMN_GENERATOR``, the size of the job); numpy stays the
oracle and the fallback. The numbers behind it: benchmarks/results/generator_candidates_cpu.md.

Invariants:

* Bits: ``fill_units(out, K, s, start, d)`` writes exactly ``rng.unit_values_into``'s float32 values
  (formats/pemn-v1.md 8.1 and 8.2): every integer step is exact or wraps mod 2**32 as the spec's
  words do, the float mapping is one exact integer-to-float64 conversion, one float64 multiplication
  by the spec's constant and one rounding to float32 (no fastmath: no contraction, no FTZ).
  tests/test_fast_generator.py pins it against numpy on every distribution.
* Threads: the kernel is serial and ``nogil``; callers spread pieces over the package's own pool
  (``_parallel``), so thread count, position-addressed chunks and fork safety are ``_parallel``'s.
  Numba's ``parallel=True``/``prange`` is deliberately not used: its ``workqueue`` threading layer
  aborts when two threads enter a parallel kernel at once and its ``omp`` layer is not fork safe.
* Never fatal: numba's on-disk cache (``cache=True``) is written next to this module, or in the
  user's cache folder when the package folder is read-only; when neither is writable (numba then
  refuses ``cache=True`` outright, or a write fails), the kernel is compiled without a cache (about
  0.4 s per process instead of 0.15 s). Numba's warnings about caching are silenced here. Any
  other failure to import or compile numba is recorded (``error``) and raised as ImportError; in
  ``auto`` mode ``rng`` then stays on numpy for the rest of the process.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np

__all__ = ["KIND", "compiled", "error", "fill_units", "kernel"]

KIND = {"normal": 0, "uniform": 1, "signed_constant": 2}  # the kernel's distribution code

# The spec's binary64 constants, bit for bit (formats/pemn-v1.md 8.2; equal to rng's, pinned by the tests).
C_N = float.fromhex("0x1.bb67ae8584cb8p-24")
C_U = float.fromhex("0x1.bb67ae8584caap-24")

_lock = threading.Lock()
_kernel: Any = None  # the compiled dispatcher, once built
_error: str | None = None  # why numba could not be used in this process, once it failed


def _fill_units(out, k0, k1, s0, s1, start, kind):  # pragma: no cover - compiled by numba, not run by Python
    """Unit values of elements ``start .. start+len(out)-1`` (uint32 keys and stream words, uint64 start).

    Written for speed as well as bits: the XORs of values below 2**32 stay below 2**32 whatever width
    numba gives them, and the float mapping works on int32 (every sum is below 2**26), whose
    conversion to float64 vectorizes; with int64 there, or a uint32 cast around each XOR, the kernel
    ran at half the speed on this machine's x86-64."""
    mask = np.uint64(0xFFFFFFFF)
    for i in range(out.shape[0]):
        idx = start + np.uint64(i)
        c0, c1 = np.uint32(idx & mask), np.uint32(idx >> np.uint64(32))
        c2, c3, a, b = s0, s1, k0, k1
        for _ in range(10):
            p0 = np.uint64(c0) * np.uint64(0xD2511F53)  # exact: both factors < 2**32
            p1 = np.uint64(c2) * np.uint64(0xCD9E8D57)
            n0 = np.uint32(p1 >> np.uint64(32)) ^ c1 ^ a
            n2 = np.uint32(p0 >> np.uint64(32)) ^ c3 ^ b
            c1, c3 = np.uint32(p1 & mask), np.uint32(p0 & mask)
            c0, c2 = n0, n2
            a, b = np.uint32(a + np.uint32(0x9E3779B9)), np.uint32(b + np.uint32(0xBB67AE85))  # mod 2**32
        eight = np.uint32(8)
        if kind == 0:  # |t| <= 2**25 - 2: exact in int32 and in float64
            t = np.int32(c0 >> eight) + np.int32(c1 >> eight) + np.int32(c2 >> eight) + np.int32(c3 >> eight)
            out[i] = np.float32(np.float64(t - np.int32(33554430)) * C_N)
        elif kind == 1:  # an odd integer, |t| < 2**24
            t = np.int32(2) * np.int32(c0 >> eight) + np.int32(1 - (1 << 24))
            out[i] = np.float32(np.float64(t) * C_U)
        elif c0 >> np.uint32(31):
            out[i] = np.float32(-1.0)
        else:
            out[i] = np.float32(1.0)


def _args(seed: int, stream: int, start: int, distribution: str) -> tuple:
    """The kernel's scalar arguments, always of the same numpy types (one compiled specialization)."""
    u32 = np.uint32
    return (u32(seed & 0xFFFFFFFF), u32(seed >> 32), u32(stream & 0xFFFFFFFF), u32(stream >> 32), np.uint64(start),
            np.int64(KIND[distribution]))  # fmt: skip


def _build(numba: Any, cache: bool) -> Any:
    """The dispatcher, compiled now for its one signature by a one-element call (no compile inside a load's threads)."""
    dispatcher = numba.njit(nogil=True, cache=cache)(_fill_units)
    dispatcher(np.empty(1, dtype=np.float32), *_args(0, 0, 0, "normal"))
    return dispatcher


def kernel() -> Any:
    """The compiled kernel (imports and compiles numba on the first call; thread safe).

    Raises ImportError (with the reason) when numba is absent or cannot compile the kernel; the
    failure is remembered, so later calls raise at once.
    """
    global _kernel, _error
    if _kernel is not None:
        return _kernel
    with _lock:
        if _kernel is None:
            if _error is not None:
                raise ImportError(_error)
            try:
                import numba

                with warnings.catch_warnings():  # caching notes (e.g. "cannot cache") are not the user's concern
                    warnings.simplefilter("ignore", numba.NumbaWarning)
                    try:
                        _kernel = _build(numba, cache=True)
                    except Exception:  # noqa: BLE001 - no writable cache folder, or a failed cache write
                        _kernel = _build(numba, cache=False)
            except Exception as exc:  # noqa: BLE001 - absent, broken or incompatible numba: the caller falls back
                _error = f"the numba generator is unavailable: {type(exc).__name__}: {exc}"
                raise ImportError(_error) from exc
    return _kernel


def compiled() -> bool:
    """Whether the kernel is compiled in this process (using it costs nothing more)."""
    return _kernel is not None


def error() -> str | None:
    """Why numba failed in this process, or None when it has not (yet) failed."""
    return _error


def fill_units(out: np.ndarray, seed: int, stream: int, start: int, distribution: str) -> None:
    """Write the unit values of elements ``start .. start+len(out)-1`` into the contiguous float32 ``out``.

    Arguments are checked by the caller (``rng.unit_values_into``). Releases the GIL while it runs.
    """
    kernel()(out, *_args(int(seed), int(stream), int(start), distribution))
