"""Streamed loading (pemn_compress.streaming, ``pemn.load``): weights written piece by piece into
their destinations must be bit-identical to the numpy-only reference reader's, on every path (CPU
in place, CPU into another dtype, the torch kernel, any thread count), for every strategy and mask
codec; the fingerprint must still catch other weights; nothing may hold all weights twice."""

from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pemn_compress as pemn
from pemn_compress import rng, streaming
from pemn_compress.errors import ChecksumError
from pemn_compress.fileformat import _bitrice
from pemn_compress.fileformat.reader import read_pemn

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pemn_reference_reader", ROOT / "formats" / "reference_reader.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STRATEGIES = {
    "dense": dict(strategy="dense"),
    "onelayer": dict(strategy="onelayer"),  # fc2, fc3 share a bank: the table lives in fc3 (the last reader)
    "mp": dict(strategy="mp"),  # the largest layer is not the last reader: a separate table
    "rp_copy": dict(strategy="rp", ratio=1e-2),
    "rp_rand": dict(strategy="rp", ratio=1e-2, rp_mode="rand"),
    "learned": dict(strategy="mp", learn_values=True),  # stored values
    "rp_learned": dict(strategy="rp", ratio=1e-2, rp_mode="rand", learn_values=True),  # stored, tiled
    "rice": dict(strategy="onelayer", density=0.05),  # low density: rice-coded masks
}


class Stack(nn.Module):
    """A user model: Linear layers of odd sizes (raw masks with padding bits), two of one shape."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(37, 61)
        self.fc2 = nn.Linear(61, 61)
        self.norm = nn.LayerNorm(61)
        self.fc3 = nn.Linear(61, 61)
        self.head = nn.Linear(61, 9)

    def forward(self, x):
        return self.head(self.fc3(self.norm(self.fc2(self.fc1(x)))))


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    """Pieces of 64 weights: every layer spans many pieces, and most end inside a byte of the mask."""
    monkeypatch.setattr(streaming, "PIECE", 64)
    monkeypatch.setattr(streaming, "DEVICE_PIECE", 200)


def _write(tmp_path, name: str) -> Path:
    torch.manual_seed(0)
    model = pemn.mask_(Stack(), pemn.MaskConfig(seed=11, **STRATEGIES[name]))
    if model.pemn_config.learn_values:
        with torch.no_grad():
            for bank in model.pemn_values:
                bank.unit.mul_(1.5)
    return Path(pemn.save(model, tmp_path / f"{name}.pemn"))


def _bits(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype (bfloat16 included)."""
    t = tensor.detach().cpu().contiguous()
    return t.view(torch.uint8).numpy().tobytes() if t.element_size() > 0 else b""


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_streamed_load_writes_the_reference_weights_into_the_skeleton(tmp_path, monkeypatch, name, threads):
    monkeypatch.setenv("PEMN_THREADS", threads)
    path = _write(tmp_path, name)
    expected = ref.read(path)["weights"]
    skeleton = Stack()
    storage = {n: skeleton.get_submodule(n).weight.data_ptr() for n in expected}
    loaded = pemn.load(path, device="cpu", model=skeleton)
    assert loaded is skeleton
    for layer, weight in expected.items():
        got = loaded.get_submodule(layer).weight
        assert got.dtype == torch.float32 and _bits(got) == weight.tobytes(), layer  # -0.0 included
        assert got.data_ptr() == storage[layer], f"{layer}: written into a new tensor, not the skeleton's"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_torch_kernel_path_is_bit_identical_on_the_cpu(tmp_path, name):
    """The device path (torch generator, device multiplications, background hashing), run on the CPU."""
    path = _write(tmp_path, name)
    expected = ref.read(path)["weights"]
    pf = read_pemn(path)
    dests = {layer: torch.full(w.shape, float("nan")) for layer, w in expected.items()}
    streaming.stream_weights(pf, streaming.check_masks(pf), dests, kernel="torch")
    for layer, weight in expected.items():
        assert _bits(dests[layer]) == weight.tobytes(), layer


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kernel", ["auto", "torch"])
def test_other_dtype_is_one_rounding_of_the_reference(tmp_path, dtype, kernel):
    path = _write(tmp_path, "onelayer")
    expected = ref.read(path)["weights"]
    pf = read_pemn(path)
    dests = {layer: torch.empty(w.shape, dtype=dtype) for layer, w in expected.items()}
    streaming.stream_weights(pf, streaming.check_masks(pf), dests, kernel=kernel)
    for layer, weight in expected.items():
        assert torch.equal(dests[layer].view(torch.int16), torch.from_numpy(weight).to(dtype).view(torch.int16)), layer
    loaded = pemn.load(path, device="cpu", model=Stack(), dtype=dtype)
    for layer, weight in expected.items():
        assert loaded.get_submodule(layer).weight.dtype == dtype
        assert _bits(loaded.get_submodule(layer).weight) == _bits(torch.from_numpy(weight).to(dtype))


@pytest.mark.parametrize("kernel", ["auto", "torch"])
def test_fingerprint_of_other_weights_is_refused(kernel):
    pf = read_pemn(ROOT / "formats" / "vectors" / "invalid" / "fingerprint_mismatch.pemn")
    with pytest.raises(ChecksumError, match="fingerprint"):
        streaming.stream_weights(pf, streaming.check_masks(pf), {}, kernel=kernel)
    streaming.stream_weights(pf, streaming.check_masks(pf), {}, kernel=kernel, verify=False)


def test_tied_weight_is_not_overwritten_in_place(tmp_path):
    """A masked layer whose weight is also another (unmasked) parameter gets a new tensor: the other
    name keeps the file's stored leftover."""

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(61, 61)
            self.also_fc = self.fc.weight  # the same Parameter under a second name

    torch.manual_seed(0)
    path = pemn.save(pemn.mask_(Tied(), pemn.MaskConfig(seed=3)), tmp_path / "tied.pemn")
    out = ref.read(path)
    assert "also_fc" in out["dense"]
    loaded = pemn.load(path, device="cpu", model=Tied())
    assert _bits(loaded.fc.weight) == out["weights"]["fc"].tobytes()
    stored = torch.from_numpy(out["dense"]["also_fc"].astype(np.float32))  # as stored (fp16 by default), widened
    assert loaded.also_fc is not loaded.fc.weight and torch.equal(loaded.also_fc, stored)


@pytest.mark.parametrize("density,codec", [(0.5, "raw"), (0.35, "rice"), (0.9, "rice")])
def test_cpu_stream_allocates_far_less_than_the_weights(tmp_path, monkeypatch, density, codec):
    """Into a float32 skeleton, the streamed load allocates pieces, never a layer-sized array
    (numpy allocations are traced by tracemalloc; the destinations are the skeleton's own), whether
    the masks are stored raw or rice-coded (decoded into packed bits a chunk of codewords at a time)."""
    monkeypatch.setattr(streaming, "PIECE", 4096)
    monkeypatch.setattr(_bitrice, "CHUNK", 1024)
    monkeypatch.setenv("PEMN_THREADS", "1")

    class Big(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(*[nn.Linear(512, 512) for _ in range(4)])

    torch.manual_seed(0)
    config = pemn.MaskConfig(strategy="onelayer", density=density, seed=2)
    path = pemn.save(pemn.mask_(Big(), config), tmp_path / "big.pemn")
    pf = read_pemn(path)
    assert {layer.codec for layer in pf.layers} == {codec}
    skeleton = Big()
    dests = {f"layers.{i}": skeleton.layers[i].weight for i in range(4)}
    weight_bytes = 4 * 512 * 512 * 4
    tracemalloc.start()
    try:
        streaming.stream_weights(pf, streaming.check_masks(pf), dests)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    held = 0 if codec == "raw" else weight_bytes // 32  # rice: every mask held packed, a bit per 4-byte weight
    assert peak < weight_bytes / 16 + held, f"peak {peak} bytes for {weight_bytes} bytes of weights"
    expected = ref.read(path)["weights"]
    for name, weight in expected.items():
        assert _bits(dests[name]) == weight.tobytes()


@pytest.mark.parametrize("distribution", ["normal", "uniform", "signed_constant"])
@pytest.mark.parametrize(
    "seed,stream,start", [(0, 0, 0), (7, 3, (1 << 32) - 40), ((1 << 64) - 1, (1 << 64) - 1, 12345)]
)
def test_fused_kernel_matches_the_plain_mapping(distribution, seed, stream, start):
    """The fused kernel against Philox words (pinned by the Random123 known answers) mapped plainly."""
    out = np.full(100, np.nan, dtype=np.float32)
    rng.unit_values_into(out, seed, stream, start, distribution)
    plain = rng._unit_from_words_numpy(rng.philox4x32_numpy(seed, stream, start, 100), distribution)
    assert out.tobytes() == plain.tobytes()


@pytest.mark.parametrize("threads", ["1", "3"])
def test_unit_values_do_not_depend_on_threads(monkeypatch, threads):
    monkeypatch.setenv("PEMN_THREADS", threads)
    n = 3 * rng._NUMPY_CHUNK + 17
    assert rng.unit_values(99, 4, n, "normal").tobytes() == ref.unit_values(99, 4, n, "normal").tobytes()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_cuda_load_is_bit_identical(tmp_path, name):
    path = _write(tmp_path, name)
    expected = ref.read(path)["weights"]
    for dtype in (None, torch.float16):
        loaded = pemn.load(path, device="cuda", model=Stack(), dtype=dtype)
        for layer, weight in expected.items():
            got = loaded.get_submodule(layer).weight
            assert got.device.type == "cuda"
            want = torch.from_numpy(weight).to(dtype or torch.float32)
            assert _bits(got) == _bits(want), layer
