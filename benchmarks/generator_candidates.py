"""Generator and fingerprint candidates for `.pemn` loading, measured side by side (issue 26, items 1 and 3).

What it measures, on this machine's CPUs:

1. **Generators.** The spec's stream (formats/pemn-v1.md section 8: Philox4x32-10 words of element ``i`` of
   stream ``s`` under seed ``K``, mapped to unit values, times a float32 layer scale) computed by

   * ``numpy``: the package's fused kernel (``pemn_compress.rng.unit_values_into``), the oracle;
   * ``numba prange``: a numba kernel written from the spec, ``parallel=True`` (numba's own threads);
   * ``numba nogil``: the same kernel, ``parallel=False, nogil=True``, called per 65,536-value chunk from the
     package's own thread pool (``pemn_compress._parallel``), as ``streaming.py`` calls numpy today;
   * ``randomgen``: randomgen's C ``Philox(number=4, width=32)`` for the words (counter ``s * 2**64 + start - 1``,
     key ``K``: it increments the counter before each block), mapped to unit values with numpy;
   * ``torch``: the package's int64 kernel (16-bit split products) and a variant with wrapping int64 products,
     run in a subprocess with the project's ``.venv`` (the study venv has no torch).

   Each is checked bit for bit against the oracle (the float32 results viewed as uint32, ``np.array_equal``)
   on every distribution, over seeds, streams and start indices that set the high counter and key words; a
   candidate that differs anywhere is disqualified. Speed: M values/s, best of 3 after one warm call, at 1
   and 2 threads. One-time costs of a fresh process (import, first call: numba's JIT compile, with and
   without its on-disk cache) come from subprocesses. Install facts come from the installed distributions.
2. **Fingerprints.** SHA-256 of all weights in one stream (v1) against v3 candidates (a SHA-256 over
   the SHA-256s of fixed 4 MiB chunks hashed in parallel threads; BLAKE3, itself a tree hash, one stream
   with its own threads or per chunk), in GB/s at 1 and 2 threads, projected to 16 cores and to a GPU
   load; then the 150M-parameter ``load_speed`` load is projected under each generator x fingerprint.
3. A decision section.

Run it with a venv that has the candidates (the project's ``.venv`` stays untouched)::

    python3 -m venv study && study/bin/pip install numpy==2.4.6 numba randomgen blake3    # a venv of its own
    PYTHONPATH=. study/bin/python benchmarks/generator_candidates.py             # ~2 minutes, from the repo root
    PYTHONPATH=. study/bin/python benchmarks/generator_candidates.py --quick     # ~40 s

Writes ``benchmarks/results/generator_candidates_cpu.{md,csv}`` (``--quick``: ``..._quick_cpu``). A candidate
that is not installed gets a row saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/generator_candidates.py` from a checkout: this checkout's package
    sys.path.insert(0, str(ROOT))

import _harness as h  # noqa: E402

from pemn_compress import _parallel, rng  # noqa: E402

DISTS = ("normal", "uniform", "signed_constant")
KIND = {d: i for i, d in enumerate(DISTS)}  # the numba kernel's distribution code
SCALE = np.float32(0.0123)  # a layer scale (any float32: the product is one float32 multiplication)
CASES = ((1234, 5, 0), (2**64 - 1, 2**32 + 7, 2**32 - 100_000), (42, 2**64 - 1, 2**40 + 3))  # (seed, stream, start)
CHECK_COUNT = 300_001  # values per bit check (not a multiple of the chunk)
CHUNK = 1 << 16  # values per task on the package's pool (rng._NUMPY_CHUNK, streaming.PIECE)
BIG_CHUNK = 1 << 20  # values per task of the numba kernel in larger pieces (pool overhead amortized)
HASH_CHUNK = 4 << 20  # bytes per leaf of the v3 tree fingerprints
STREAM_PIECE = 1 << 18  # bytes per update of the v1 one-stream SHA-256 (streaming.PIECE float32 weights)
KAT = {  # formats/pemn-v1.md 8.2, seed 1234, stream 5, elements 0..7, float32 bits
    "normal": "3fd82f3c bfa51d81 be84b7e5 bf071fc1 3e2c5b58 be887fc6 3f5dbc42 bf174405",
    "signed_constant": "bf800000 3f800000 3f800000 bf800000 bf800000 3f800000 bf800000 3f800000",
    "uniform": "3fd2071c bef6e641 bf9abc74 3f634936 3fdb5094 bf896b9b 3ea35682 bdd7f25a",
}
# The 150M load of benchmarks/results/load_speed_cpu.md (linear_stack 4096x9, onelayer, density 0.5).
LOAD = {"params": 151_146_506, "masked": 9 * 4096 * 4096 + 4096 * 10, "bank": 4096 * 4096 + 4096 * 10,
        "dense_ms": 646.0, "pemn_ms": 1306.0}  # fmt: skip
WHEEL_MB = {"numba": 3.8, "llvmlite": 59.7, "randomgen": 3.4, "blake3": 0.39}  # `pip download` x86_64 cp311 wheels
C_N = float.fromhex("0x1.bb67ae8584cb8p-24")  # spec 8.2, bit for bit
C_U = float.fromhex("0x1.bb67ae8584caap-24")
TORCH_PYTHON = ROOT / ".venv" / "bin" / "python"


# ------------------------------------------------------------------------------------------ timing
def best_seconds(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` after one warm call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@contextlib.contextmanager
def threads(n: int):
    """``n`` worker threads for every pool the candidates use (the package's pool, numba's, torch's)."""
    saved = os.environ.get("PEMN_THREADS")
    os.environ["PEMN_THREADS"] = str(n)
    numba = sys.modules.get("numba")
    old_numba = numba.get_num_threads() if numba else None
    if numba:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        os.environ.pop("PEMN_THREADS") if saved is None else os.environ.__setitem__("PEMN_THREADS", saved)
        if numba:
            numba.set_num_threads(old_numba)


def best_of(rows: list[dict], again: list[dict]) -> None:
    """Keep in ``rows`` the better rate of two rounds of the same measurements (same rows, same order)."""
    for row, other in zip(rows, again, strict=True):
        for key, value in other.items():
            if key.startswith(("mvals_", "gbs_")) and value is not None:
                row[key] = max(row.get(key) or 0.0, value)


def on_pool(fill_chunk, out: np.ndarray, chunk: int = CHUNK) -> None:
    """``fill_chunk(out[s:e], s)`` for every ``chunk``-sized piece, on the package's pool."""
    _parallel.for_chunks(lambda s, e: fill_chunk(out[s:e], s), out.shape[0], chunk)


# ---------------------------------------------------------------------------------- numba kernels
# Plain Python, compiled by ``numba_kernels``; the names ``_nb_value`` and ``_prange`` are bound then.
def _philox_value(i, k0, k1, s0, s1, start, kind, scale):
    """The scaled float32 value of element ``start + i`` (spec 8.1, 8.2; all integer steps exact)."""
    idx = start + np.uint64(i)
    c0, c1 = np.uint32(idx & np.uint64(0xFFFFFFFF)), np.uint32(idx >> np.uint64(32))
    c2, c3, a, b = s0, s1, k0, k1
    for _ in range(10):
        p0 = np.uint64(c0) * np.uint64(0xD2511F53)
        p1 = np.uint64(c2) * np.uint64(0xCD9E8D57)
        n0 = np.uint32(p1 >> np.uint64(32)) ^ c1 ^ a
        n2 = np.uint32(p0 >> np.uint64(32)) ^ c3 ^ b
        c1, c3 = np.uint32(p1 & np.uint64(0xFFFFFFFF)), np.uint32(p0 & np.uint64(0xFFFFFFFF))
        c0, c2 = n0, n2
        a, b = np.uint32(a + np.uint32(0x9E3779B9)), np.uint32(b + np.uint32(0xBB67AE85))
    eight = np.uint32(8)
    if kind == 0:  # |t| < 2**26: int32 and its float64 conversion are exact
        t = np.int32(c0 >> eight) + np.int32(c1 >> eight) + np.int32(c2 >> eight) + np.int32(c3 >> eight)
        unit = np.float32(np.float64(t - np.int32(33554430)) * C_N)
    elif kind == 1:
        t = np.int32(2) * np.int32(c0 >> eight) + np.int32(1 - (1 << 24))
        unit = np.float32(np.float64(t) * C_U)
    else:
        unit = np.float32(-1.0) if c0 >> np.uint32(31) else np.float32(1.0)
    return unit * scale  # float32 x float32: one rounding


def _fill_parallel(out, k0, k1, s0, s1, start, kind, scale):
    for i in _prange(out.shape[0]):  # noqa: F821 (numba.prange, bound by numba_kernels)
        out[i] = _nb_value(i, k0, k1, s0, s1, start, kind, scale)  # noqa: F821


def _fill_serial(out, k0, k1, s0, s1, start, kind, scale):
    for i in range(out.shape[0]):
        out[i] = _nb_value(i, k0, k1, s0, s1, start, kind, scale)  # noqa: F821


def _finish_serial(out, table, scale, packed, start):
    """``streaming._finish`` fused: ``(table * scale) * mask`` with the mask read from MSB-first packed bits."""
    for i in range(out.shape[0]):
        j = start + i
        bit = (packed[j >> 3] >> (7 - (j & 7))) & 1
        out[i] = (table[i] * scale) * np.float32(bit)


_NUMBA: dict = {}


def numba_kernels(cache: bool | None = None) -> dict:
    """The compiled-on-first-call numba dispatchers: ``parallel``, ``serial``, ``finish`` (``cache``: numba's
    on-disk cache; None: the dispatchers built already, else ones without it)."""
    if cache is None:
        cache = _NUMBA.get("cache", False)
    if _NUMBA.get("cache") != cache:
        import numba

        g = globals()
        g["_nb_value"] = numba.njit(inline="always")(_philox_value)
        g["_prange"] = numba.prange
        _NUMBA.clear()
        _NUMBA.update(cache=cache, parallel=numba.njit(parallel=True, cache=cache)(_fill_parallel),
                      serial=numba.njit(nogil=True, cache=cache)(_fill_serial),
                      finish=numba.njit(nogil=True, cache=cache)(_finish_serial))  # fmt: skip
    return _NUMBA


def numba_args(seed: int, stream: int, start: int, dist: str) -> tuple:
    u32 = np.uint32
    return (u32(seed & 0xFFFFFFFF), u32(seed >> 32), u32(stream & 0xFFFFFFFF), u32(stream >> 32), np.uint64(start),
            np.int64(KIND[dist]), SCALE)  # fmt: skip


# ------------------------------------------------------------------------------------- candidates
def fill_numpy(out, seed, stream, start, dist) -> None:
    """The oracle, as ``streaming._finish`` computes it: unit values in place, then times the scale."""

    def chunk(o, s):
        rng.unit_values_into(o, seed, stream, start + s, dist)
        np.multiply(o, SCALE, out=o)

    on_pool(chunk, out)


def fill_numba_parallel(out, seed, stream, start, dist) -> None:
    numba_kernels()["parallel"](out, *numba_args(seed, stream, start, dist))


def fill_numba_nogil(out, seed, stream, start, dist, chunk: int = CHUNK) -> None:
    kernel = numba_kernels()["serial"]
    on_pool(lambda o, s: kernel(o, *numba_args(seed, stream, start + s, dist)), out, chunk)


def fill_numba_nogil_big(out, seed, stream, start, dist) -> None:
    """The nogil kernel in ``BIG_CHUNK`` pieces: it has no temporaries, so pieces need not fit a cache."""
    fill_numba_nogil(out, seed, stream, start, dist, BIG_CHUNK)


def randomgen_units(out, seed, stream, start, dist) -> None:
    """Words from randomgen's C Philox4x32-10, mapped with numpy (the spec's integer steps, in uint32/int32)."""
    from randomgen import Philox

    n = out.shape[0]
    bits = Philox(counter=((stream << 64) + start - 1) % (1 << 128), key=seed, number=4, width=32)
    w = np.random.Generator(bits).integers(0, 1 << 32, size=(n, 4), dtype=np.uint32)  # full range: raw words
    if dist == "signed_constant":
        np.copyto(out, np.where(w[:, 0] >> 31 == 1, np.float32(-1.0), np.float32(1.0)))
        return
    w >>= np.uint32(8)
    if dist == "normal":
        t = w[:, 0] + w[:, 1]
        t += w[:, 2]
        t += w[:, 3]
        t = t.view(np.int32)
        t -= np.int32(33554430)
        mul = C_N
    else:
        t = w[:, 0].view(np.int32) * np.int32(2)
        t += np.int32(1 - (1 << 24))
        mul = C_U
    f = t.astype(np.float64)
    f *= mul
    np.copyto(out, f, casting="same_kind")


def fill_randomgen(out, seed, stream, start, dist) -> None:
    def chunk(o, s):
        randomgen_units(o, seed, stream, start + s, dist)
        np.multiply(o, SCALE, out=o)

    on_pool(chunk, out)


CANDIDATES = {  # name: (fill, module it needs, pip package)
    "numpy (oracle, package)": (fill_numpy, "numpy", "numpy"),
    "numba prange": (fill_numba_parallel, "numba", "numba"),
    "numba nogil on package pool": (fill_numba_nogil, "numba", "numba"),
    "numba nogil on package pool, 2^20 chunks": (fill_numba_nogil_big, "numba", "numba"),
    "randomgen Philox + numpy map": (fill_randomgen, "randomgen", "randomgen"),
}


def installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def oracle(seed: int, stream: int, start: int, n: int, dist: str) -> np.ndarray:
    out = np.empty(n, dtype=np.float32)
    with threads(1):
        fill_numpy(out, seed, stream, start, dist)
    return out


def kat_ok() -> bool:
    """The oracle reproduces the spec's known answers (8.2) for every distribution."""
    return all(" ".join(f"{v:08x}" for v in rng.unit_values(1234, 5, 8, d).view(np.uint32)) == KAT[d] for d in DISTS)


def bits_identical(fill, dist: str) -> bool:
    for seed, stream, start in CASES:
        out = np.empty(CHECK_COUNT, dtype=np.float32)
        with threads(2):
            fill(out, seed, stream, start, dist)
        if not np.array_equal(out.view(np.uint32), oracle(seed, stream, start, CHECK_COUNT, dist).view(np.uint32)):
            return False
    return True


def bench_candidates(count: int, check: bool = True) -> list[dict]:
    """One row per candidate and distribution: bit-identical (None without ``check``), M values/s at 1 and 2 threads."""
    rows = []
    for name, (fill, module, package) in CANDIDATES.items():
        if not installed(module):
            rows += [{"candidate": name, "distribution": d, "note": f"not installed: pip install {package}"}
                     for d in DISTS]  # fmt: skip
            continue
        for dist in DISTS:
            row = {"candidate": name, "distribution": dist, "note": ""}
            row["identical"] = bits_identical(fill, dist) if check else None
            out = np.empty(count, dtype=np.float32)
            for n in (1, 2):
                with threads(n):
                    row[f"mvals_{n}"] = count / best_seconds(lambda: fill(out, 5, 0, 0, dist)) / 1e6  # noqa: B023
            rows.append(row)
            print(f"{name:<30} {dist:<16} identical={row['identical']} "
                  f"{row['mvals_1']:.1f} / {row['mvals_2']:.1f} M/s", flush=True)  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------ torch
def torch_units(c0, c1, c2, c3, dist: str):
    """Spec 8.2 on int64 tensors holding the four words."""
    import torch

    if dist == "normal":
        t = (c0 >> 8) + (c1 >> 8) + (c2 >> 8) + (c3 >> 8) - 33554430
        return (t.to(torch.float64) * C_N).to(torch.float32)
    if dist == "uniform":
        return ((2 * (c0 >> 8) + 1 - (1 << 24)).to(torch.float64) * C_U).to(torch.float32)
    one = torch.ones((), dtype=torch.float32)
    return torch.where((c0 >> 31) == 1, -one, one)


def torch_words_wrapping(seed: int, stream: int, start: int, n: int):
    """Philox words with plain int64 products: both factors < 2**32, so the 64-bit pattern is the exact
    product even where int64 wraps (which C++ leaves undefined; torch's CPU and CUDA kernels wrap)."""
    import torch

    mask = 0xFFFFFFFF
    idx = torch.arange(start, start + n, dtype=torch.int64)
    c0, c1 = idx & mask, idx >> 32
    c2, c3 = torch.full_like(c0, stream & mask), torch.full_like(c0, stream >> 32)
    k0, k1 = seed & mask, seed >> 32
    for _ in range(10):
        p0, p1 = c0 * 0xD2511F53, c2 * 0xCD9E8D57
        c0, c1, c2, c3 = ((p1 >> 32) & mask) ^ c1 ^ k0, p1 & mask, ((p0 >> 32) & mask) ^ c3 ^ k1, p0 & mask
        k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
    return c0, c1, c2, c3


def torch_fill(kind: str):
    import torch

    chunk = 1 << 20 if kind == "package" else CHUNK

    def fill(out, seed, stream, start, dist):
        dest = torch.from_numpy(out)
        for s in range(0, out.shape[0], chunk):
            e = min(s + chunk, out.shape[0])
            if kind == "package":
                words = rng.philox4x32_torch(seed, stream, start + s, e - s)
                words = (words[:, 0], words[:, 1], words[:, 2], words[:, 3])
            else:
                words = torch_words_wrapping(seed, stream, start + s, e - s)
            dest[s:e] = torch_units(*words, dist) * torch.tensor(float(SCALE), dtype=torch.float32)

    return fill


def torch_worker(count: int) -> dict:
    """Run with the project's .venv: the torch rows, the skeleton build time of the 150M model, torch's version."""
    import torch

    rows = []
    for kind, name in (("package", "torch int64 (package kernel)"), ("wrapping", "torch int64, wrapping products")):
        fill = torch_fill(kind)
        for dist in DISTS:
            row = {"candidate": name, "distribution": dist, "identical": bits_identical(fill, dist), "note": ""}
            out = np.empty(count, dtype=np.float32)
            for n in (1, 2):
                torch.set_num_threads(n)
                row[f"mvals_{n}"] = count / best_seconds(lambda: fill(out, 5, 0, 0, dist)) / 1e6  # noqa: B023
            rows.append(row)
    from torch import nn

    def skeleton():
        layers: list[nn.Module] = []
        for _ in range(9):
            layers += [nn.Linear(4096, 4096), nn.LayerNorm(4096)]
        return nn.Sequential(*layers, nn.Linear(4096, 10))

    torch.set_num_threads(2)
    return {"rows": rows, "torch": torch.__version__, "skeleton_ms": 1000 * best_seconds(skeleton, repeats=3)}


def torch_rows(count: int) -> dict:
    """The torch candidates: in this interpreter when it has torch, else in the project's .venv, else a note."""
    if installed("torch"):
        return torch_worker(count)
    note = "not installed: pip install torch (or keep the project's .venv next to benchmarks/)"
    if TORCH_PYTHON.exists():
        out = subprocess.run([str(TORCH_PYTHON), __file__, "--torch-worker", str(count)], capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        if out.returncode == 0:
            return json.loads(out.stdout.strip().splitlines()[-1])
        note = f"torch worker failed: {out.stderr.strip().splitlines()[-1:]}"
    return {"rows": [{"candidate": "torch", "distribution": d, "note": note} for d in DISTS]}


# ----------------------------------------------------------------------------- fresh-process costs
def first_call(name: str) -> dict:
    """In this fresh process: seconds to import the candidate's module (on top of numpy and the package's
    rng, which this script imports first) and seconds of its first call on 1,024 values."""
    out = np.empty(1024, dtype=np.float32)
    t0 = time.perf_counter()
    if name == "numpy":  # measured by ``fresh_costs`` with -c instead: this script has imported it already
        importlib.import_module("pemn_compress.rng")
    else:
        importlib.import_module({"numba": "numba", "numba-cache": "numba", "randomgen": "randomgen"}.get(name, name))
    result = {"import_s": time.perf_counter() - t0}
    with threads(1):
        if name.startswith("numba"):
            kernels = numba_kernels(cache=name == "numba-cache")
            for key, call in (("first_s", lambda: fill_numba_nogil(out, 1, 2, 3, "normal")),
                              ("parallel_first_s", lambda: fill_numba_parallel(out, 1, 2, 3, "normal")),
                              ("finish_first_s", lambda: kernels["finish"](out, out, SCALE, np.zeros(128, np.uint8), 0))
                              ):  # fmt: skip
                t1 = time.perf_counter()
                call()
                result[key] = time.perf_counter() - t1
        else:
            fill = {"numpy": fill_numpy, "randomgen": fill_randomgen}.get(name) or torch_fill("package")
            t1 = time.perf_counter()
            fill(out, 1, 2, 3, "normal")
            result["first_s"] = time.perf_counter() - t1
    return result


NUMPY_FRESH = ("import time; t0 = time.perf_counter(); import numpy as np; from pemn_compress import rng; "
               "t1 = time.perf_counter(); rng.unit_values(1, 2, 1024); t2 = time.perf_counter(); "
               "import json; print(json.dumps({'import_s': t1 - t0, 'first_s': t2 - t1}))")  # fmt: skip


def _child(python: str, args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([python, *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})  # fmt: skip
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def fresh_costs() -> list[dict]:
    """One-time costs, each in fresh processes (best of 2 where nothing is cached between the two)."""
    me = [sys.executable, __file__, "--first-call"]

    def best2(args, python=sys.executable, env=None):
        runs = [_child(python, args, env) for _ in range(2)]
        return min(runs, key=lambda r: r.get("import_s", 0) + r.get("first_s", 0))

    rows = [
        {
            "candidate": "numpy (oracle, package)",
            "how": "import numpy + pemn_compress.rng",
            **best2(["-c", NUMPY_FRESH]),
        }
    ]
    if installed("numba"):
        rows.append({"candidate": "numba", "how": "JIT compile, no cache", **best2(me[1:] + ["numba"])})
        with tempfile.TemporaryDirectory() as cache:
            env = {"NUMBA_CACHE_DIR": cache}
            rows.append({"candidate": "numba", "how": "cache=True, cold (compile + write)",
                         **_child(sys.executable, me[1:] + ["numba-cache"], env)})  # fmt: skip
            rows.append(
                {"candidate": "numba", "how": "cache=True, warm (load)", **best2(me[1:] + ["numba-cache"], env=env)}
            )
    if installed("randomgen"):
        rows.append({"candidate": "randomgen", "how": "import randomgen", **best2(me[1:] + ["randomgen"])})
    torch_python = sys.executable if installed("torch") else str(TORCH_PYTHON) if TORCH_PYTHON.exists() else None
    if torch_python:
        rows.append({"candidate": "torch", "how": "import torch", **best2(me[1:] + ["torch"], python=torch_python)})
    return rows


def install_facts() -> list[dict]:
    rows = []
    for package in ("numpy", "numba", "llvmlite", "randomgen", "blake3"):
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            rows.append({"package": package, "version": "not installed", "tag": "", "mb": None})
            continue
        tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
                if line.startswith("Tag:")]  # fmt: skip
        size = sum(p.stat().st_size for f in dist.files or [] if (p := Path(str(f.locate()))).is_file())
        requires = ", ".join(r.split(";")[0] for r in dist.requires or [] if "extra" not in r)
        rows.append({"package": package, "version": dist.version, "tag": ", ".join(tags[:1]), "mb": size / 2**20,
                     "requires": requires})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------ fingerprints
def _leaves(view: memoryview, digest, workers: int) -> bytes:
    """The v3 tree: ``digest`` of every ``HASH_CHUNK`` leaf on ``workers`` threads, then SHA-256 of the list."""
    bounds = range(0, len(view), HASH_CHUNK)
    with ThreadPoolExecutor(workers) as pool:
        leaves = list(pool.map(lambda s: digest(view[s : s + HASH_CHUNK]), bounds))
    return hashlib.sha256(b"".join(leaves)).digest()


def _sha256_stream(view: memoryview, workers: int) -> bytes:
    hasher = hashlib.sha256()
    for s in range(0, len(view), STREAM_PIECE):
        hasher.update(view[s : s + STREAM_PIECE])
    return hasher.digest()


def fingerprints() -> dict:
    """name: (hash(view, workers), parallel over threads?, module it needs)."""
    import_blake3 = installed("blake3")
    fps = {
        "SHA-256, one stream (v1)": (_sha256_stream, False, "hashlib"),
        "SHA-256 tree, 4 MiB leaves": (
            lambda v, n: _leaves(v, lambda b: hashlib.sha256(b).digest(), n),
            True,
            "hashlib",
        ),
        "BLAKE2b tree, 4 MiB leaves": (
            lambda v, n: _leaves(v, lambda b: hashlib.blake2b(b).digest(), n),
            True,
            "hashlib",
        ),
    }
    if import_blake3:
        from blake3 import blake3

        fps["BLAKE3, one stream (own threads)"] = (lambda v, n: blake3(v, max_threads=n).digest(), True, "blake3")
        fps["BLAKE3 tree, 4 MiB leaves"] = (lambda v, n: _leaves(v, lambda b: blake3(b).digest(), n), True, "blake3")
    else:
        fps["BLAKE3"] = (None, True, "blake3")
    return fps


def bench_hashes(nbytes: int) -> list[dict]:
    data = np.random.default_rng(0).integers(0, 1 << 32, nbytes // 4, dtype=np.uint32)
    view = memoryview(data).cast("B")
    rows = []
    for name, (fn, parallel, module) in fingerprints().items():
        if fn is None:
            rows.append({"fingerprint": name, "parallel": parallel, "note": f"not installed: pip install {module}"})
            continue
        row = {"fingerprint": name, "parallel": parallel, "note": ""}
        for n in (1, 2):
            row[f"gbs_{n}"] = nbytes / best_seconds(lambda: fn(view, n)) / 1e9  # noqa: B023
        rows.append(row)
        print(f"{name:<34} {row['gbs_1']:.2f} / {row['gbs_2']:.2f} GB/s", flush=True)
    dst = np.empty_like(data)
    rows.append({"fingerprint": "memcpy (reference: one pass over memory)", "parallel": False, "note": "",
                 "gbs_1": nbytes / best_seconds(lambda: np.copyto(dst, data)) / 1e9})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------- the finish step
def finish_numpy(out, table, packed) -> None:
    """``streaming._finish`` on the pool: ``(table * scale) * mask``, a 65,536-weight piece at a time."""

    def piece(o, s):
        np.multiply(table[s : s + o.shape[0]], SCALE, out=o)
        np.multiply(o, np.unpackbits(packed[s // 8 : (s + o.shape[0] + 7) // 8], count=o.shape[0]), out=o)

    on_pool(piece, out)


def finish_numba(out, table, packed) -> None:
    kernel = numba_kernels()["finish"]
    on_pool(lambda o, s: kernel(o, table[s : s + o.shape[0]], SCALE, packed, s), out)


def bench_finish(count: int) -> list[dict]:
    """M weights/s of the masking step that every weight of a load goes through (bank values x scale x mask)."""
    table = rng.unit_values(7, 0, count)
    packed = np.packbits(np.random.default_rng(1).integers(0, 2, count, dtype=np.uint8))
    ref = np.empty(count, dtype=np.float32)
    finish_numpy(ref, table, packed)
    rows = []
    for name, fn, module in (("numpy (streaming._finish)", finish_numpy, "numpy"),
                             ("numba nogil on package pool", finish_numba, "numba")):  # fmt: skip
        if not installed(module):
            rows.append({"finish": name, "note": f"not installed: pip install {module}"})
            continue
        out = np.empty(count, dtype=np.float32)
        fn(out, table, packed)
        row = {"finish": name, "identical": bool(np.array_equal(out.view(np.uint32), ref.view(np.uint32))), "note": ""}
        for n in (1, 2):
            with threads(n):
                row[f"mvals_{n}"] = count / best_seconds(lambda: fn(out, table, packed)) / 1e6  # noqa: B023
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------- projections
PCIE_GBS = 25.0  # assumed device-to-host copy rate of a GPU load that hashes on the host (PCIe 4/5 x16, pinned)
CORES_16 = 16


def load_seconds(gen: dict, fin: dict, fp: dict, strategy: str, cores: int = 2) -> float:
    """Generation + masking + fingerprint seconds of the 150M load on ``cores`` cores, from the per-core rates
    (on 2 cores the generator's measured 2-thread rate; beyond, its 1-thread rate x ``cores``).

    ``onelayer`` (the load_speed file: one 16.8M-value bank read by 9 layers): the bank is generated first on
    all cores, then masking and hashing share them; ``dense`` strategy (one bank per layer): all 151M values
    are generated, masked and hashed, overlapped. A one-stream hash runs on one core whatever the others do.
    """
    n, nbytes = LOAD["masked"], 4 * LOAD["masked"]
    hash_cpu = nbytes / (fp["gbs_1"] * 1e9)
    serial = 0.0 if fp["parallel"] else hash_cpu
    finish_cpu = n / (fin["mvals_1"] * 1e6)
    if strategy == "onelayer":
        gen_rate = gen["mvals_2"] if cores == 2 else gen["mvals_1"] * cores
        return LOAD["bank"] / (gen_rate * 1e6) + max(serial, (finish_cpu + hash_cpu) / cores)
    return max(serial, (n / (gen["mvals_1"] * 1e6) + finish_cpu + hash_cpu) / cores)


def usable(rows: list[dict], key: str = "candidate") -> dict[str, dict]:
    """name -> its normal-distribution row, for the candidates that ran and are bit-identical everywhere."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r[key] for r in rows):
        mine = [r for r in rows if r[key] == name]
        if all(r.get("identical") for r in mine):
            out[name] = next((r for r in mine if r.get("distribution", "normal") == "normal"), mine[0])
    return out


def projections(gens: list[dict], finishes: list[dict], hashes: list[dict]) -> tuple[list[dict], float]:
    """Every generator x fingerprint, with the fastest bit-identical masking step; and the fixed cost
    (calibrated: the measured 150M pemn load minus the model of today's numpy + SHA-256 stream + numpy masking)."""
    gen_ok, fin_ok = usable(gens), usable(finishes, "finish")
    fps = {r["fingerprint"]: r for r in hashes if "gbs_1" in r and not r["fingerprint"].startswith("memcpy")}
    numpy_fin = fin_ok["numpy (streaming._finish)"]
    fin = max(fin_ok.values(), key=lambda r: r["mvals_1"])
    today = load_seconds(gen_ok["numpy (oracle, package)"], numpy_fin, fps["SHA-256, one stream (v1)"], "onelayer")
    fixed = LOAD["pemn_ms"] / 1000 - today
    rows = []
    for gname, gen in gen_ok.items():
        for fname, fp in fps.items():
            row = {"generator": gname, "finish": fin["finish"], "fingerprint": fname}
            for strategy in ("onelayer", "dense"):
                ms = 1000 * (fixed + load_seconds(gen, fin, fp, strategy))
                row[f"{strategy}_ms"] = ms
                row[f"{strategy}_ratio"] = ms / LOAD["dense_ms"]
                row[f"{strategy}_mws"] = LOAD["masked"] / ms / 1e3
                row[f"{strategy}_work2"] = ms - 1000 * fixed
                row[f"{strategy}_work16"] = 1000 * load_seconds(gen, fin, fp, strategy, cores=CORES_16)
            rows.append(row)
    return rows, 1000 * fixed


def hash_projection(row: dict) -> dict:
    """16 cores: per-core rate x 16 where the hash splits over threads (linear scaling, memory bandwidth not
    binding), else one core's rate. GPU load: generation on the device, pieces copied to the host and hashed
    there on 16 cores, capped by the copy (``PCIE_GBS``). Hashing on the GPU itself was not measured: only a
    fingerprint made of independent leaves (a tree) can be split over GPU threads at all."""
    cores16 = row["gbs_1"] * (CORES_16 if row["parallel"] else 1)
    return {"cores16": cores16, "gpu": min(cores16, PCIE_GBS)}


# --------------------------------------------------------------------------------------- rendering
def fmt(value, spec: str = ".1f", empty: str = "") -> str:
    return empty if value is None else format(value, spec)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def setup_line(torch_version: str | None, load_start: float) -> str:
    versions = []
    for package in ("numpy", "numba", "randomgen", "blake3"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    where = "this interpreter" if installed("torch") else "the project's .venv, in a subprocess"
    versions.append(f"torch {torch_version} ({where})" if torch_version else "torch not run")
    return (f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} CPU(s) shared with other jobs, Python "
            f"{platform.python_version()}, {', '.join(versions)}; 1 and 2 threads; each rate the best of 2 rounds x "
            f"3 calls after a warm call (torch: 1 round); load average {load_start:.2f} at the start, "
            f"{h.load_average()}; {h.today()}.")  # fmt: skip


def generator_table(rows: list[dict]) -> list[str]:
    base = {r["distribution"]: r.get("mvals_1") for r in rows if r["candidate"] == "numpy (oracle, package)"}
    lines = ["| candidate | distribution | bit-identical to numpy | M values/s, 1 thread | M values/s, 2 threads "
             "| vs numpy, 1 thread | note |", "|---|---|---|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        ident = {True: "yes", False: "**no: disqualified**", None: "-"}[r.get("identical")]
        speedup = r["mvals_1"] / base[r["distribution"]] if r.get("mvals_1") and base.get(r["distribution"]) else None
        times = f"{speedup:.1f}x" if speedup else ""
        lines.append(f"| {r['candidate']} | {r['distribution']} | {ident} | {fmt(r.get('mvals_1'))} | "
                     f"{fmt(r.get('mvals_2'))} | {times} | {r.get('note', '')} |")  # fmt: skip
    return lines


def costs_table(costs: list[dict], facts: list[dict]) -> list[str]:
    lines = ["| candidate | what | import s | first call s (generator) | first call s (prange kernel) "
             "| first call s (masking kernel) |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in costs:
        if "error" in r:
            lines.append(f"| {r['candidate']} | {r['how']} | failed: {r['error']} | | | |")
            continue
        secs = [fmt(r.get(k), ".3f") for k in ("import_s", "first_s", "parallel_first_s", "finish_first_s")]
        lines.append(f"| {r['candidate']} | {r['how']} | {' | '.join(secs)} |")
    lines += ["", "| package | version | wheel tag installed (no compiler needed) | installed MB | wheel MB "
              "(x86_64 cp311, `pip download`) | requires |", "|---|---|---|---:|---:|---|"]  # fmt: skip
    for r in facts:
        lines.append(f"| {r['package']} | {r['version']} | {r['tag']} | {fmt(r['mb'])} | "
                     f"{fmt(WHEEL_MB.get(r['package']), '.1f')} | {r.get('requires', '')} |")  # fmt: skip
    return lines


def hash_table(rows: list[dict]) -> list[str]:
    lines = ["| fingerprint | splits over threads | GB/s, 1 thread | GB/s, 2 threads | M weights/s, 2 threads "
             "| 16 cores (projected) GB/s | GPU load, host hashes (projected) GB/s | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        if "gbs_1" not in r:
            lines.append(f"| {r['fingerprint']} | | | | | | | {r['note']} |")
            continue
        p = hash_projection(r) if not r["fingerprint"].startswith("memcpy") else {"cores16": None, "gpu": None}
        two = r.get("gbs_2")
        cells = [
            f"{r['gbs_1']:.2f}",
            fmt(two, ".2f"),
            fmt(two and two * 1e3 / 4, ".0f"),
            fmt(p["cores16"]),
            fmt(p["gpu"]),
        ]
        lines.append(f"| {r['fingerprint']} | {'yes' if r['parallel'] else 'no'} | {' | '.join(cells)} | |")
    return lines


def finish_table(rows: list[dict]) -> list[str]:
    lines = ["| masking step | bit-identical to numpy | M weights/s, 1 thread | M weights/s, 2 threads | note |",
             "|---|---|---:|---:|---|"]  # fmt: skip
    for r in rows:
        ident = {True: "yes", False: "**no**", None: "-"}[r.get("identical")]
        lines.append(f"| {r['finish']} | {ident} | {fmt(r.get('mvals_1'))} | {fmt(r.get('mvals_2'))} | {r['note']} |")
    return lines


def projection_table(rows: list[dict]) -> list[str]:
    lines = ["| generator | fingerprint | onelayer file: ms | ratio | M weights/s | targets met "
             "| dense-strategy file: ms | ratio | M weights/s | targets met "
             "| work only, 2 cores: onelayer / dense ms | work only, 16 cores (projected): onelayer / dense ms |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|"]  # fmt: skip
    for r in rows:
        cells = []
        for s in ("onelayer", "dense"):
            met = r[f"{s}_ratio"] <= 1.0 and r[f"{s}_mws"] >= 300
            cells += [
                f"{r[f'{s}_ms']:.0f}",
                f"{r[f'{s}_ratio']:.2f}",
                f"{r[f'{s}_mws']:.0f}",
                "**both**" if met else "no",
            ]
        cells += [
            f"{r['onelayer_work2']:.0f} / {r['dense_work2']:.0f}",
            f"{r['onelayer_work16']:.0f} / {r['dense_work16']:.0f}",
        ]
        lines.append(f"| {r['generator']} | {r['fingerprint']} | {' | '.join(cells)} |")
    return lines


ADOPT = "numba nogil on package pool, 2^20 chunks"
NUMPY_LOAD_SPEED = 53.6  # M values/s, numpy fused, 1 thread, in load_speed_cpu.md (a quieter moment of this machine)
NUMPY = "numpy (oracle, package)"
V1 = "SHA-256, one stream (v1)"


def decision_generator(gens: list[dict], costs: list[dict]) -> list[str]:
    """The generator half of the decision, its numbers taken from this run."""
    ok, bad = usable(gens), sorted({r["candidate"] for r in gens if r.get("identical") is False})
    if ADOPT not in ok:
        return [f"* No decision on the generator: `{ADOPT}` did not run here (see its rows)."]
    rate = {(r["candidate"], r["distribution"]): r.get("mvals_1") or 0.0 for r in gens}
    per_dist = ", ".join(f"{d} {rate[ADOPT, d]:.0f} vs {rate[NUMPY, d]:.0f}" for d in DISTS)
    cost = {r["how"]: r for r in costs if r["candidate"] == "numba" and "error" not in r}
    compile_s = cost["JIT compile, no cache"]["import_s"] + cost["JIT compile, no cache"]["first_s"]
    warm_s = cost["cache=True, warm (load)"]["import_s"] + cost["cache=True, warm (load)"]["first_s"]
    numpy_best = max(rate[NUMPY, "normal"], NUMPY_LOAD_SPEED)  # the conservative numpy rate
    saved_per_value = 1 / (numpy_best * 1e6) - 1 / (rate[ADOPT, "normal"] * 1e6)
    two = {(r["candidate"], r["distribution"]): r.get("mvals_2") or 0.0 for r in gens}
    small = "numba nogil on package pool"
    lines = [
        f"* **Generator: adopt the numba kernel (`{ADOPT}`) as an optional accelerator, numpy stays the oracle and "
        f"the fallback.** One thread, M values/s, numba vs numpy: {per_dist} (about "
        f"{rate[ADOPT, 'normal'] / rate[NUMPY, 'normal']:.0f}x on normal values here; "
        f"{rate[ADOPT, 'normal'] / NUMPY_LOAD_SPEED:.0f}x against the {NUMPY_LOAD_SPEED} M/s numpy reached in "
        "load_speed_cpu.md); bit-identical on every distribution, seed, stream and start tested, on 2 threads."
        + (f" Disqualified (bits differ): {', '.join(bad)}." if bad else ""),
        f"* Why the nogil kernel on the package's pool rather than `numba prange` (normal values, 1 / 2 threads: "
        f"{rate['numba prange', 'normal']:.0f} / {two['numba prange', 'normal']:.0f} M/s against "
        f"{rate[ADOPT, 'normal']:.0f} / {two[ADOPT, 'normal']:.0f}): it keeps `_parallel`'s position-addressed "
        "chunks, thread count (`PEMN_THREADS`) and fork safety; numba's own threading layer does not (its `workqueue` "
        "layer aborts when two threads enter a parallel kernel at once, its `omp` layer is not fork-safe), and the "
        "prange kernel takes about twice as long to compile. Call it on pieces of about 2^20 values: it needs no "
        "temporaries, and in today's 65,536-value pieces the pool's per-task cost shows at 2 threads "
        f"({two[small, 'normal']:.0f} against {two[ADOPT, 'normal']:.0f} M/s in this run). 2-thread rates on this "
        "shared machine depend on whether the other core is free at that moment (see the load average in the setup "
        "line).",
        f"* First call in a fresh process: import numba + compile {compile_s:.2f} s without a cache, "
        f"{warm_s:.2f} s with `cache=True` warm. Break-even against numpy: {compile_s / saved_per_value / 1e6:.0f}M "
        f"values cold, {warm_s / saved_per_value / 1e6:.0f}M with a warm cache; so use numba only when it is "
        "importable and the file generates more than that (or a warm cache exists), numpy otherwise.",
        "* Install: numba and llvmlite ship manylinux wheels for this Python (no compiler); llvmlite is a "
        f"{WHEEL_MB['llvmlite']:.0f} MB download (~170 MB installed), so numba is an extra (`pemn-compress[fast]`), "
        "never a requirement: without it the package runs the numpy kernel exactly as today.",
        "* randomgen: its C Philox4x32-10 reproduces the stream (layout above), but it is scalar and the float mapping "
        f"stays numpy: {rate.get(('randomgen Philox + numpy map', 'normal'), 0):.0f} M/s. Not worth a dependency.",
        f"* torch on the CPU: the package's kernel {rate.get(('torch int64 (package kernel)', 'normal'), 0):.0f} M/s; "
        f"with plain wrapping int64 products {rate.get(('torch int64, wrapping products', 'normal'), 0):.0f} M/s, "
        "bit-identical. Not a CPU candidate, but the wrapping form is worth measuring on the device path (it relies on "
        "int64 products wrapping, which torch's CPU and CUDA kernels do but C++ does not promise).",
    ]
    return lines


def decision_fingerprint(proj: list[dict], fixed_ms: float, skeleton_ms: float | None) -> list[str]:
    """The fingerprint half of the decision and what is left of the load targets."""
    by = {(r["generator"], r["fingerprint"]): r for r in proj}
    gen = ADOPT if (ADOPT, V1) in by else NUMPY
    name = "numba" if gen == ADOPT else "numpy"
    v3 = min((f for g, f in by if g == gen and f != V1), key=lambda f: by[gen, f]["onelayer_ms"], default=None)
    if v3 is None:
        return ["* No v3 fingerprint ran here: no decision on it."]
    lines = []
    for strategy, what in (("onelayer", "the load_speed file (onelayer)"), ("dense", "a dense-strategy file")):
        today, a, b = by[NUMPY, V1][f"{strategy}_ms"], by[gen, V1][f"{strategy}_ms"], by[gen, v3][f"{strategy}_ms"]
        lines.append(f"* 150M load, {what}, 2 cores, projected: today {today:.0f} ms; {name} + SHA-256 stream "
                     f"{a:.0f} ms ({today / a:.2f}x); {name} + {v3} {b:.0f} ms ({a / b:.2f}x over {name} + v1; "
                     f"the dense load takes {LOAD['dense_ms']:.0f} ms).")  # fmt: skip
    gain = max(by[gen, V1][f"{s}_ms"] / by[gen, v3][f"{s}_ms"] for s in ("onelayer", "dense"))
    w1, w3 = by[gen, V1], by[gen, v3]
    lines.append(
        f"* **v3 fingerprint: {'adopt' if gain >= 2 else 'not adopted'}.** The rule asks for at least 2x load speed "
        f"at 150M; the best v3 candidate ({v3}) gives {gain:.2f}x at most on these 2 cores. Where it would matter: "
        "the one-stream SHA-256 runs on one core whatever the machine, so on 16 cores (projected, work only) it "
        f"still takes {w1['onelayer_work16']:.0f} / {w1['dense_work16']:.0f} ms (onelayer / dense) against "
        f"{w3['onelayer_work16']:.0f} / {w3['dense_work16']:.0f} ms, and a GPU load hashes on the host at one "
        "core's rate. Re-measure the rule on a 16-core or GPU machine before a format v3."
    )
    met = [r for r in proj if any(r[f"{s}_ratio"] <= 1.0 and r[f"{s}_mws"] >= 300 for s in ("onelayer", "dense"))]
    skeleton = (f"; building the user's skeleton (random init of 151M weights, timed in both loads) took "
                f"{skeleton_ms:.0f} ms here, so the fixed cost is mostly that build, which the dense load pays too "
                "(the two numbers come from different moments of a shared machine)" if skeleton_ms else "")  # fmt: skip
    lines.append(
        f"* Targets (ratio <= 1.0 and >= 300 M weights/s): met by {len(met)} of {len(proj)} combinations on these "
        f"2 cores. Every projection carries the fixed cost, {fixed_ms:.0f} ms (the measured 1306 ms minus the "
        f"modelled generation, masking and hashing), against the dense load's {LOAD['dense_ms']:.0f} ms and the "
        f"{LOAD['masked'] / 300e6 * 1e3:.0f} ms that 300 M weights/s allows{skeleton}."
    )
    return lines


NEXT_STEPS = [
    "## 4. What the next engineer must build",
    "",
    "1. `pemn_compress/_numba.py`, imported lazily: `_philox_value` and `_fill_serial` from this file (`nogil=True, "
    "cache=True`), and a dispatch in `rng.unit_values_into` (so `unit_values` and `streaming._Table.fill` get it): "
    "numba when importable and the call is large enough (see the break-even above), numpy otherwise; an environment "
    "switch (e.g. `PEMN_KERNEL=numpy`) to force the oracle. Keep the package's pool and position-addressed chunks, "
    "but give the numba kernel pieces of about 2^20 values (generate a bank's values ahead of the 65,536-weight "
    "masking pieces).",
    "2. Tests: numba against numpy bit for bit on all three distributions at the (seed, stream, start) cases above "
    "and the spec's known answers, skipped when numba is absent; one CI run with numba installed and one without.",
    "3. `setup.cfg`: an extra `fast = numba` (wheels only); README: what it buys.",
    "4. Keep masking in numpy (`np.unpackbits` + two multiplications): the bit-at-a-time numba masking kernel "
    "written here was slower in every run (see the masking table).",
    "5. Profile the fixed cost of `pemn.load` at 150M (skeleton init, file read, mask validation, leftovers): after "
    "the generator, it is what separates pemn from the dense load; and decide with the lead whether the benchmark "
    "should time the user's skeleton build, which both loads pay.",
    "6. The v3 fingerprint (BLAKE3 or a SHA-256 tree over 4 MiB leaves): only after the rule is re-measured on a "
    "16-core or GPU machine.",
]


def report(args, gens, costs, facts, hashes, finishes, proj, fixed_ms, torch_info) -> list[str]:
    cmd = "PYTHONPATH=. study/bin/" + h.recorded_command("generator_candidates.py", sys.argv[1:])
    lines = ["# Generator and fingerprint candidates for `.pemn` loading (cpu)", "", f"Command: `{cmd}`", "",
             f"Setup: {setup_line(torch_info.get('torch'), args.load_start)}", "",
             f"Oracle check: the numpy kernel reproduces the spec's known answers (formats/pemn-v1.md 8.2): "
             f"{'yes' if kat_ok() else '**NO**'}. Bit checks: {CHECK_COUNT:,} scaled values (x float32 {SCALE}) at "
             f"each of (seed, stream, start) = {', '.join(str(c) for c in CASES)}, on 2 threads, float32 bits "
             f"compared as uint32. Speed: seed 5, stream 0, {args.count:,} values "
             f"(torch: {args.count // 8:,}), scaled.", "",
             "## 1. Generators", ""]  # fmt: skip
    lines += generator_table(gens) + ["", "### One-time costs in a fresh process, and install", ""]
    lines += costs_table(costs, facts) + ["", RANDOMGEN_NOTE, "", "## 2. Fingerprints", ""]
    assumption = " ".join((hash_projection.__doc__ or "").split()).replace("``", "`")
    assumption = assumption.replace("`PCIE_GBS`", f"{PCIE_GBS:g} GB/s")
    lines += hash_table(hashes) + ["", f"{args.hash_mb} MiB of random words hashed per call. {assumption}", ""]
    lines += (
        ["### The masking step of a load", ""] + finish_table(finishes) + ["", f"{args.finish_count:,} weights.", ""]
    )
    lines += ["### Projected 150M load (linear_stack 4096x9), 2 cores", "", LOAD_NOTE, ""] + projection_table(proj)
    lines += ["", "## 3. Decision", ""] + decision_generator(gens, costs)
    lines += decision_fingerprint(proj, fixed_ms, torch_info.get("skeleton_ms"))
    return lines + [""] + NEXT_STEPS


RANDOMGEN_NOTE = (
    "randomgen's layout: `Philox(number=4, width=32)` keeps the counter as four 32-bit words `(c0, c1, c2, c3)`, "
    "adds 1 to it as one 128-bit integer before each block, and takes the key `(k0, k1)` as a 64-bit integer; the "
    "spec's counter `(i mod 2**32, i >> 32, s mod 2**32, s >> 32)` is exactly the 128-bit integer `s * 2**64 + i`, "
    "so `counter = (s * 2**64 + start - 1) mod 2**128, key = K` gives the spec's words for elements start, start+1, "
    "... in order (4 words per element; `Generator.integers(0, 2**32, dtype=uint32)` returns them unchanged). It "
    "CAN reproduce the stream. But its Philox is scalar C behind a per-word function pointer, so its words come "
    "no faster than numpy's vectorized kernel, and the float mapping is still numpy."
)
LOAD_NOTE = (
    "Model: per-core rates measured above (generator: normal values; masking: the fastest bit-identical one; "
    "fingerprint at 1 thread) and the "
    "file's work: the onelayer file generates its 16.8M-value bank (both cores), then masks and hashes 151M "
    "weights (604 MB) with the two sharing the cores; a dense-strategy file generates all 151M values. A "
    "one-stream hash cannot split, so it bounds the load at its one-core time. Each row adds the same fixed "
    "cost (file read, checks, skeleton), calibrated so that today's path gives the measured 1306 ms "
    "(load_speed_cpu.md). Ratio: against the dense load's 646 ms; targets: ratio <= 1.0 and >= 300 M weights/s. "
    "Work only: generation, masking and hashing without the fixed cost; 16 cores: the per-core rates x 16 (linear "
    "scaling, memory bandwidth not binding), a one-stream hash still on one core."
)


def write_csv(path: Path, gens, hashes, finishes) -> None:
    fields = ["table", "name", "distribution", "identical", "rate_1", "rate_2", "unit", "note"]
    rows = [{"table": "generator", "name": r["candidate"], "distribution": r["distribution"],
             "identical": r.get("identical"), "rate_1": r.get("mvals_1"), "rate_2": r.get("mvals_2"),
             "unit": "M values/s", "note": r.get("note", "")} for r in gens]  # fmt: skip
    rows += [{"table": "fingerprint", "name": r["fingerprint"], "rate_1": r.get("gbs_1"), "rate_2": r.get("gbs_2"),
              "unit": "GB/s", "note": r.get("note", "")} for r in hashes]  # fmt: skip
    rows += [{"table": "masking", "name": r["finish"], "identical": r.get("identical"), "rate_1": r.get("mvals_1"),
              "rate_2": r.get("mvals_2"), "unit": "M weights/s", "note": r["note"]} for r in finishes]  # fmt: skip
    h.start_csv(path, fields, resume=False)
    h.append_rows(path, fields, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer values per measurement (about 40 s)")
    parser.add_argument("--out", type=Path, default=h.RESULTS, help="folder of the .md and .csv")
    parser.add_argument("--first-call", help=argparse.SUPPRESS)
    parser.add_argument("--torch-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.first_call:
        return print(json.dumps(first_call(args.first_call)))
    if args.torch_worker:
        return print(json.dumps(torch_worker(args.torch_worker)))
    args.count = 1 << (21 if args.quick else 23)
    args.hash_mb = 64 if args.quick else 256
    args.finish_count = LOAD["bank"] // (4 if args.quick else 1)
    load_start = os.getloadavg()[0]
    gens = bench_candidates(args.count)
    hashes = bench_hashes(args.hash_mb << 20)
    finishes = bench_finish(args.finish_count)
    torch_info = torch_rows(args.count // 8)
    costs, facts = fresh_costs(), install_facts()
    print("second round (the machine is shared: each rate keeps the better of two rounds)", flush=True)
    best_of(gens, bench_candidates(args.count, check=False))
    best_of(hashes, bench_hashes(args.hash_mb << 20))
    best_of(finishes, bench_finish(args.finish_count))
    gens += torch_info["rows"]
    args.load_start = load_start
    proj, fixed_ms = projections(gens, finishes, hashes)
    stem = f"generator_candidates{'_quick' if args.quick else ''}_cpu"
    h.write_text(
        args.out / f"{stem}.md", report(args, gens, costs, facts, hashes, finishes, proj, fixed_ms, torch_info)
    )
    write_csv(args.out / f"{stem}.csv", gens, hashes, finishes)


if __name__ == "__main__":
    main()
