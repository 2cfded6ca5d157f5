"""The bit-exact generator (pemn_compress.rng): the core promise of the .pemn format.

Independent checks: the published Random123 known answers for Philox4x32-10 itself, and the
integer-to-float mappings transcribed from the spec in plain Python arithmetic (``_spec_value``).
Regression pins: the output vectors and the SHA-256 below were produced by this package; they prove
nothing about correctness alone, but any change of these bits must fail here, loudly: every file ever
written depends on them.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pemn_compress import rng
from pemn_compress.errors import ConfigError, PemnError

MASK32 = 0xFFFFFFFF


def _u64(lo: int, hi: int) -> int:
    return (hi << 32) | lo


# (counter words c0..c3, key words k0..k1, expected output words) -- Random123 kat_vectors, philox4x32_10
KATS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

# unit_values(seed=1234, stream=5, count=8, distribution=d).view(np.uint32). NEVER update these
# to make a test pass: a change here breaks every .pemn file already written.
PINNED = {
    "normal": [0x3FD82F3C, 0xBFA51D81, 0xBE84B7E5, 0xBF071FC1, 0x3E2C5B58, 0xBE887FC6, 0x3F5DBC42, 0xBF174405],
    "signed_constant": [0xBF800000, 0x3F800000, 0x3F800000, 0xBF800000, 0xBF800000, 0x3F800000, 0xBF800000, 0x3F800000],
    "uniform": [0x3FD2071C, 0xBEF6E641, 0xBF9ABC74, 0x3F634936, 0x3FDB5094, 0xBF896B9B, 0x3EA35682, 0xBDD7F25A],
}
SHA256_NORMAL_42_0_100000 = "63cbc7ea4c46bdcc26f4f23925def1243af2ce89e8677c66848e7220331f284b"


# ----------------------------------------------------------------------------------- Philox KATs
@pytest.mark.parametrize("counter,key,expected", KATS)
def test_numpy_kernel_matches_random123_kat(counter, key, expected):
    seed = _u64(*key)
    stream = _u64(counter[2], counter[3])
    start = _u64(counter[0], counter[1])
    words = rng.philox4x32_numpy(seed, stream, start, 1)
    assert words.dtype == np.uint32
    assert words.shape == (1, 4)
    assert [int(w) for w in words[0]] == list(expected)


@pytest.mark.parametrize(
    "seed,stream,start",
    [
        (0, 0, 0),
        ((1 << 64) - 1, (1 << 64) - 1, 0),  # all-ones key and stream words
        (_u64(0xA4093822, 0x299F31D0), _u64(0x13198A2E, 0x03707344), 0x243F6A88),  # KAT 3 key, low counter
        (7, 3, (1 << 32) - 2),  # counter word 0 carries into word 1
        (123, 1 << 40, (1 << 62) - 5),  # last indices the torch kernel accepts
    ],
)
def test_torch_kernel_matches_numpy_kernel(seed, stream, start):
    count = 5
    expected = rng.philox4x32_numpy(seed, stream, start, count)
    got = rng.philox4x32_torch(seed, stream, start, count, device="cpu")
    assert got.dtype == torch.int64
    assert got.shape == (count, 4)
    assert int(got.min()) >= 0 and int(got.max()) <= MASK32
    np.testing.assert_array_equal(got.numpy().astype(np.uint32), expected)


def test_numpy_kernel_counter_layout():
    # element i of a block starting at `start` is the single element at start + i
    block = rng.philox4x32_numpy(9, 4, (1 << 32) - 2, 4)
    for i in range(4):
        np.testing.assert_array_equal(block[i], rng.philox4x32_numpy(9, 4, (1 << 32) - 2 + i, 1)[0])


def test_torch_kernel_refuses_indices_beyond_2_62():
    with pytest.raises(ConfigError):
        rng.philox4x32_torch(0, 0, (1 << 62) - 2, 3)


# ----------------------------------------------------------------------------------- pinned bits
@pytest.mark.parametrize("distribution", rng.DISTRIBUTIONS)
def test_pinned_unit_values(distribution):
    values = rng.unit_values(seed=1234, stream=5, count=8, distribution=distribution)
    assert isinstance(values, np.ndarray)
    assert values.dtype == np.float32
    assert [int(v) for v in values.view(np.uint32)] == PINNED[distribution]


def test_pinned_sha256_of_100k_normal_values():
    values = rng.unit_values(42, 0, 100000, "normal")
    assert values.dtype == np.float32 and values.shape == (100000,)
    assert hashlib.sha256(values.tobytes()).hexdigest() == SHA256_NORMAL_42_0_100000


def _spec_value(words, distribution: str) -> np.float32:
    """The documented integer-to-float mapping, in plain Python arithmetic (float is IEEE float64)."""
    w = [int(x) for x in words]
    if distribution == "normal":
        s = sum(x >> 8 for x in w) - 2 * ((1 << 24) - 1)
        return np.float32(float(s) * (1.0 / math.sqrt(((1 << 48) - 1) / 3.0)))
    if distribution == "uniform":
        return np.float32(float(2 * (w[0] >> 8) + 1 - (1 << 24)) * (math.sqrt(3.0) / (1 << 24)))
    return np.float32(-1.0 if w[0] >> 31 else 1.0)


@pytest.mark.parametrize("distribution", rng.DISTRIBUTIONS)
def test_unit_values_follow_the_documented_mapping(distribution):
    seed, stream, count = 99, 17, 64
    words = rng.philox4x32_numpy(seed, stream, 0, count)
    expected = np.array([_spec_value(words[i], distribution) for i in range(count)], dtype=np.float32)
    got = rng.unit_values(seed, stream, count, distribution)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_uniform_extremes_stay_strictly_inside_sqrt3():
    # the largest and smallest 24-bit draws map strictly inside (-sqrt 3, sqrt 3), after float32 rounding
    top = np.array([[MASK32, 0, 0, 0], [0, 0, 0, 0]], dtype=np.uint32)
    values = rng._unit_from_words_numpy(top, "uniform")
    assert values[0] > 0 > values[1]
    assert float(values[0]) < math.sqrt(3.0) and float(values[1]) > -math.sqrt(3.0)
    assert values[0] == -values[1]  # symmetric: 2u + 1 - 2**24 is odd and symmetric around 0


def test_normal_extremes_are_bounded_by_2_sqrt3():
    ones = np.full((1, 4), MASK32, dtype=np.uint32)
    zeros = np.zeros((1, 4), dtype=np.uint32)
    hi = float(rng._unit_from_words_numpy(ones, "normal")[0])
    lo = float(rng._unit_from_words_numpy(zeros, "normal")[0])
    assert hi == -lo
    assert 3.4 < hi <= 2 * math.sqrt(3.0)


# ----------------------------------------------------------------------------------- numpy == torch
def _bits(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.cpu().numpy()
    assert x.dtype == np.float32
    return x.view(np.uint32)


@pytest.mark.parametrize("distribution", rng.DISTRIBUTIONS)
def test_numpy_and_torch_cpu_identical_across_chunks(distribution, monkeypatch):
    unchunked = rng.unit_values(7, 3, 2500, distribution)
    monkeypatch.setattr(rng, "_CHUNK", 1000)
    monkeypatch.setattr(rng, "_NUMPY_CHUNK", 700)
    np_vals = rng.unit_values(7, 3, 2500, distribution, kernel="numpy")
    t_vals = rng.unit_values(7, 3, 2500, distribution, device="cpu", kernel="torch")
    assert isinstance(t_vals, torch.Tensor) and t_vals.dtype == torch.float32 and t_vals.device.type == "cpu"
    np.testing.assert_array_equal(_bits(np_vals), _bits(t_vals))
    np.testing.assert_array_equal(_bits(np_vals), _bits(unchunked))  # chunking never changes values


def test_unit_values_prefix_consistent():
    # a layer reads the first n entries of a bank: shorter draws must be prefixes of longer ones
    long = rng.unit_values(5, 2, 3000, "normal")
    np.testing.assert_array_equal(_bits(rng.unit_values(5, 2, 1234, "normal")), _bits(long[:1234]))


def test_unit_values_device_cpu_returns_tensor_with_numpy_bits():
    got = rng.unit_values(3, 1, 100, "normal", device="cpu")
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(_bits(got), _bits(rng.unit_values(3, 1, 100, "normal")))


def test_zero_count():
    assert rng.unit_values(0, 0, 0).shape == (0,)
    assert tuple(rng.unit_values(0, 0, 0, device="cpu", kernel="torch").shape) == (0,)


@pytest.mark.parametrize("distribution", rng.DISTRIBUTIONS)
def test_torch_kernel_independent_of_thread_count(distribution):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rng.unit_values(11, 4, 20000, distribution, device="cpu", kernel="torch").clone()
        torch.set_num_threads(2)
        two = rng.unit_values(11, 4, 20000, distribution, device="cpu", kernel="torch")
    finally:
        torch.set_num_threads(old)
    np.testing.assert_array_equal(_bits(one), _bits(two))
    np.testing.assert_array_equal(_bits(one), _bits(rng.unit_values(11, 4, 20000, distribution)))


# ----------------------------------------------------------------------------------- statistics
@pytest.fixture(scope="module")
def samples():
    return {d: rng.unit_values(2024, 1, 200_000, d).astype(np.float64) for d in rng.DISTRIBUTIONS}


@pytest.mark.parametrize("distribution", rng.DISTRIBUTIONS)
def test_unit_mean_and_std(samples, distribution):
    x = samples[distribution]
    # std error of the mean is 1/sqrt(200k) ~ 0.0022; of the std ~ 0.0016
    assert abs(x.mean()) < 0.012
    assert abs(x.std() - 1.0) < 0.01


def test_normal_shape(samples):
    x = samples["normal"]
    assert np.abs(x).max() <= 2 * math.sqrt(3.0)
    assert np.abs(x).max() > 3.0  # it does reach the tails
    kurtosis = np.mean((x - x.mean()) ** 4) / x.var() ** 2
    assert abs(kurtosis - 2.7) < 0.05  # Irwin-Hall(4): 3 - 6/20, near a normal's 3 (a uniform has 1.8)
    assert len(np.unique(x)) > 190_000  # not a coarse grid


def test_uniform_shape(samples):
    x = samples["uniform"]
    assert np.all(np.abs(x) < math.sqrt(3.0))
    hist, _ = np.histogram(x, bins=10, range=(-math.sqrt(3.0), math.sqrt(3.0)))
    assert np.all(np.abs(hist - 20_000) < 800)


def test_signed_constant_shape(samples):
    x = samples["signed_constant"]
    assert set(np.unique(x).tolist()) == {-1.0, 1.0}
    assert abs(np.mean(x > 0) - 0.5) < 0.01


@pytest.mark.parametrize("distribution", rng.DISTRIBUTIONS)
def test_streams_and_seeds_differ(distribution):
    base = rng.unit_values(1, 0, 256, distribution)
    other_stream = rng.unit_values(1, 1, 256, distribution)
    other_seed = rng.unit_values(2, 0, 256, distribution)
    high_stream = rng.unit_values(1, 1 << 32, 256, distribution)  # only the high stream word differs
    high_seed = rng.unit_values(1 + (1 << 32), 0, 256, distribution)  # only the high key word differs
    for other in (other_stream, other_seed, high_stream, high_seed):
        # signed_constant has only two values: half agree by chance; the others essentially never
        limit = 0.7 if distribution == "signed_constant" else 0.01
        assert np.mean(base == other) < limit


# ----------------------------------------------------------------------------------- permutation
def test_permutation_is_a_seeded_permutation():
    p = rng.permutation(3, 9, 1000)
    assert p.dtype == np.int64
    np.testing.assert_array_equal(np.sort(p), np.arange(1000))
    np.testing.assert_array_equal(p, rng.permutation(3, 9, 1000))
    assert not np.array_equal(p, rng.permutation(4, 9, 1000))
    assert not np.array_equal(p, rng.permutation(3, 10, 1000))
    assert not np.array_equal(p, np.arange(1000))


def test_permutation_definition():
    # indices stably sorted by Philox word 0
    keys = rng.philox4x32_numpy(3, 9, 0, 500)[:, 0]
    np.testing.assert_array_equal(rng.permutation(3, 9, 500), np.argsort(keys, kind="stable"))


def test_permutation_numpy_equals_torch_including_ties(monkeypatch):
    seed, stream, n = 29, 1 << 32, 20_000  # this seed has two equal 32-bit keys: stable tie-breaking matters
    keys = rng.philox4x32_numpy(seed, stream, 0, n)[:, 0]
    assert len(np.unique(keys)) < n, "pick n/seed so that keys tie"
    p_np = rng.permutation(seed, stream, n)
    p_t = rng.permutation(seed, stream, n, device="cpu", kernel="torch")
    assert p_t.dtype == torch.int64
    np.testing.assert_array_equal(p_np, p_t.numpy())
    monkeypatch.setattr(rng, "_CHUNK", 7_000)  # chunking does not change the permutation
    monkeypatch.setattr(rng, "_NUMPY_CHUNK", 3_000)
    np.testing.assert_array_equal(p_np, rng.permutation(seed, stream, n))
    np.testing.assert_array_equal(p_np, rng.permutation(seed, stream, n, device="cpu", kernel="torch").numpy())


# ----------------------------------------------------------------------------------- scaled values
@pytest.mark.parametrize("scale", [0.0883883461356163, 0.28284270763397217, 1.0, 3.1e-3])
def test_scaled_values_numpy_equals_torch(scale):
    unit = rng.unit_values(8, 2, 4096, "normal")
    a = rng.scaled_values(unit, scale)
    b = rng.scaled_values(torch.from_numpy(unit.copy()), scale)
    assert a.dtype == np.float32 and b.dtype == torch.float32
    np.testing.assert_array_equal(_bits(a), _bits(b))
    # one correctly rounded float32 multiplication: exact float64 product rounded once
    exact = (unit.astype(np.float64) * np.float64(np.float32(scale))).astype(np.float32)
    np.testing.assert_array_equal(_bits(a), _bits(exact))


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("seed", [-1, 1 << 64, (1 << 70) + 3])
def test_invalid_seed(seed):
    with pytest.raises(ConfigError):
        rng.unit_values(seed, 0, 4)
    with pytest.raises(ConfigError):
        rng.philox4x32_numpy(seed, 0, 0, 1)
    with pytest.raises(ConfigError):
        rng.philox4x32_torch(seed, 0, 0, 1)


@pytest.mark.parametrize("stream", [-1, 1 << 64])
def test_invalid_stream(stream):
    with pytest.raises(ConfigError):
        rng.unit_values(0, stream, 4)


def test_largest_seed_accepted():
    assert rng.unit_values((1 << 64) - 1, (1 << 64) - 1, 4).shape == (4,)


@pytest.mark.parametrize("kernel", ["numpy", "torch"])
def test_unknown_distribution(kernel):
    with pytest.raises(ConfigError) as info:
        rng.unit_values(0, 0, 4, "gaussian", device="cpu", kernel=kernel)
    assert isinstance(info.value, PemnError) and isinstance(info.value, ValueError)
    assert "gaussian" in str(info.value)


def test_unknown_kernel_and_negative_count():
    with pytest.raises(ConfigError):
        rng.unit_values(0, 0, 4, kernel="cuda")
    with pytest.raises(ConfigError):
        rng.unit_values(0, 0, -1)


def test_numpy_half_does_not_import_torch():
    # the reference reader's twin: generating values on the numpy path must not need torch
    code = (
        "import sys; from pemn_compress import rng; v = rng.unit_values(1234, 5, 8, 'normal');"
        "p = rng.permutation(1, 2, 10); print('torch' in sys.modules, v.view('uint32')[0])"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=root)
    assert out.stdout.split() == ["False", str(PINNED["normal"][0])]


# ----------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
def test_cuda_bits_equal_numpy():
    for distribution in rng.DISTRIBUTIONS:
        expected = rng.unit_values(1234, 5, 300_000, distribution)
        got = rng.unit_values(1234, 5, 300_000, distribution, device="cuda")  # auto: torch kernel
        assert got.device.type == "cuda"
        np.testing.assert_array_equal(_bits(expected), _bits(got))
        assert [int(v) for v in got[:8].cpu().numpy().view(np.uint32)] == PINNED[distribution]
    words = rng.philox4x32_torch(123, 1 << 40, (1 << 62) - 5, 5, device="cuda").cpu().numpy().astype(np.uint32)
    np.testing.assert_array_equal(words, rng.philox4x32_numpy(123, 1 << 40, (1 << 62) - 5, 5))
    np.testing.assert_array_equal(
        rng.permutation(0, 1 << 32, 200_000), rng.permutation(0, 1 << 32, 200_000, device="cuda").cpu().numpy()
    )
    unit = rng.unit_values(8, 2, 4096, "normal")
    np.testing.assert_array_equal(
        _bits(rng.scaled_values(unit, 0.0883883461356163)),
        _bits(rng.scaled_values(torch.from_numpy(unit).cuda(), 0.0883883461356163)),
    )
