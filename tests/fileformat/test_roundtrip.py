"""``save`` / ``load`` round trips (pemn_compress.api, fileformat.writer/reader): bit-exact models for
every strategy on a zoo model and on a user model, the trainable form, determinism, atomic writes,
fp16 leftovers, folded BatchNorm, mask codecs, and every refusal of the loader."""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import edit_pemn
from safetensors import safe_open
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import pemn_compress as pemn
from pemn_compress.errors import (
    ChecksumError,
    ContainerError,
    FormatError,
    HeaderError,
    LimitError,
    ModelError,
    ShapeError,
    TrustError,
    VersionError,
)
from pemn_compress.export import to_bytes
from pemn_compress.fileformat.container import decode_container, encode_container
from pemn_compress.fileformat.reader import decode_masks, read_pemn
from pemn_compress.fileformat.summary import binary_entropy
from pemn_compress.surgery import masked_layers, materialize

REPO = Path(__file__).resolve().parents[2]

STRATEGIES = {
    "dense": dict(strategy="dense"),
    "onelayer": dict(strategy="onelayer"),
    "mp": dict(strategy="mp"),
    "rp_copy": dict(strategy="rp", ratio=1e-3),
    "rp_rand": dict(strategy="rp", ratio=1e-3, rp_mode="rand"),
    "rp_learned": dict(strategy="rp", ratio=1e-2, learn_values=True, density=0.3),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class UserNet(nn.Module):
    """Not in the zoo: grouped, depthwise and 1-d convs, biases, BatchNorm, LayerNorm, a free
    parameter and a buffer. Two convs share a shape (onelayer shares their prototype)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.grouped2 = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=True)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.seq = nn.Conv1d(8, 6, 5)
        self.norm = nn.LayerNorm(6 * 60)
        self.head = nn.Linear(6 * 60, classes)
        self.temperature = nn.Parameter(torch.tensor(1.5))
        self.register_buffer("offset", torch.linspace(-1, 1, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))  # (B, 8, 8, 8)
        x = F.relu(self.grouped2(F.relu(self.grouped(x))))  # (B, 8, 8, 8)
        x = F.relu(self.bn2(self.depthwise(x)))  # (B, 8, 8, 8)
        x = self.seq(x.flatten(2))  # (B, 6, 60)
        x = self.norm(x.flatten(1))  # (B, 360)
        return self.head(x) / self.temperature + self.offset  # (B, classes)


def _perturb(model: nn.Module, seed: int) -> None:
    """Non-default dense state, as after training: BN statistics, norm affine, biases, free params."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("scores") and ".value_bank." not in f".{name}":
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if b.is_floating_point() and "running" in name:
                b.copy_(b + 0.2 * torch.rand(b.shape, generator=g))


def make(kind: str, strategy: str, seed: int = 0):
    """(masked model in eval mode, skeleton factory or None for zoo models, example input)."""
    config = pemn.MaskConfig(**{"seed": seed, **STRATEGIES[strategy]})
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # torch's default init of biases: same seed, same model
        if kind == "zoo":
            model, skeleton, x = pemn.create_model("test_convmixer"), None, torch.randn(4, 1, 28, 28)
        else:
            model, skeleton, x = UserNet(), UserNet, torch.randn(4, 3, 8, 8)
    pemn.mask_(model, config)
    _perturb(model, seed + 7)
    if config.learn_values:  # "trained" values: the file must carry these, not the generator's
        with torch.no_grad():
            for bank in model.pemn_values:
                bank.unit.mul_(1.25).add_(0.01)
    return model.eval(), skeleton, x


def check_safetensors(path) -> None:
    """Any safetensors reader opens a .pemn file and sees the same tensors and metadata."""
    tensors, metadata = decode_container(Path(path).read_bytes())
    with safe_open(str(path), framework="numpy") as f:
        assert set(f.keys()) == set(tensors)
        assert f.metadata() == metadata and f.metadata()["format"] == "pemn"
        for key in f.keys():
            assert np.array_equal(f.get_tensor(key), tensors[key])


def save(model, path, **options) -> Path:
    path = pemn.save(model, path, **options)
    check_safetensors(path)
    return Path(path)


def load(path, skeleton, **options):
    return pemn.load(path, device="cpu", model=skeleton() if skeleton else None, **options)


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("kind", ["zoo", "user"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_load_save_is_bit_exact(tmp_path, kind, strategy):
    model, skeleton, x = make(kind, strategy)
    path = save(model, tmp_path / "m.pemn", dense_dtype="float32", provenance={"dataset": "unit-test"})
    loaded = load(path, skeleton)
    assert not loaded.training
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(loaded(x), expected)
    # materialize gives the same plain module as load, weight for weight
    dense = materialize(copy.deepcopy(model))
    for name, layer in masked_layers(model):
        assert torch.equal(loaded.get_submodule(name).weight, layer.materialized_weight())
    assert_same_state(loaded, dense)
    with torch.no_grad():
        assert torch.equal(dense(x), expected)
    # the trainable form: masks identical to the stored ones and to the model's, same outputs
    trainable = load(path, skeleton, masked=True)
    stored = decode_masks(read_pemn(path))
    original = dict(masked_layers(model))
    for name, layer in masked_layers(trainable):
        assert torch.equal(layer.mask(), original[name].mask()), name
        assert np.array_equal(layer.mask().numpy(), stored[name]), name
        assert layer.scores.requires_grad
    with torch.no_grad():
        assert torch.equal(trainable.eval()(x), expected)
    if STRATEGIES[strategy].get("learn_values"):
        for ours, theirs in zip(trainable.pemn_values, model.pemn_values, strict=True):
            assert torch.equal(ours.unit, theirs.unit) and ours.unit.requires_grad


def test_save_is_deterministic(tmp_path):
    a, _, _ = make("user", "rp_rand", seed=3)
    b, _, _ = make("user", "rp_rand", seed=3)  # built again from scratch: same inputs
    first = save(a, tmp_path / "a.pemn").read_bytes()
    assert save(a, tmp_path / "a2.pemn").read_bytes() == first
    assert save(b, tmp_path / "b.pemn").read_bytes() == first
    c, _, _ = make("user", "rp_rand", seed=4)
    assert save(c, tmp_path / "c.pemn").read_bytes() != first


def test_save_is_atomic(tmp_path, monkeypatch):
    old, _, _ = make("zoo", "onelayer")
    path = save(old, tmp_path / "m.pemn")
    before = path.read_bytes()
    new, _, _ = make("zoo", "mp", seed=5)

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        pemn.save(new, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pemn"]  # no temporary file left behind
    monkeypatch.undo()
    assert save(new, path).read_bytes() != before


def test_fp16_leftovers_halve_the_dense_part(tmp_path):
    model, skeleton, x = make("user", "onelayer")
    full = read_pemn(save(model, tmp_path / "f32.pemn", dense_dtype="float32"))
    half_path = save(model, tmp_path / "f16.pemn", dense_dtype="float16")
    half = read_pemn(half_path)
    ratio = half.tensor_bytes("dense.") / full.tensor_bytes("dense.")
    assert 0.45 <= ratio <= 0.6, ratio
    assert half_path.stat().st_size < full.file_size
    for path in (half_path, save(model, tmp_path / "default.pemn")):  # whatever the default, weights stay exact
        loaded = load(path, skeleton)
        assert next(loaded.parameters()).dtype == torch.float32
        for name, layer in masked_layers(model):
            assert torch.equal(loaded.get_submodule(name).weight, layer.materialized_weight()), name
        with torch.no_grad():
            assert torch.allclose(loaded(x), model(x), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("kind", ["zoo", "user"])
def test_fold_batchnorm_matches_in_eval_mode(tmp_path, kind):
    model, skeleton, x = make(kind, "mp")
    plain = read_pemn(save(model, tmp_path / "plain.pemn", dense_dtype="float32"))
    path = save(model, tmp_path / "folded.pemn", dense_dtype="float32", fold_batchnorm=True)
    pf = read_pemn(path)
    assert pf.header["dense"]["folded_batchnorm"] and pf.tensor_bytes("dense.") < plain.tensor_bytes("dense.")
    loaded = load(path, skeleton)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="folded"):
        load(path, skeleton, masked=True)


# ---------------------------------------------------------------------------------------------
# mask codecs


def test_low_density_mask_is_rice_coded_near_its_entropy(tmp_path):
    model = nn.Sequential(nn.Linear(256, 256, bias=False))  # 65,536 weights
    pemn.mask_(model, pemn.MaskConfig(density=0.1, strategy="dense"))
    pf = read_pemn(save(model, tmp_path / "sparse.pemn"))
    (layer,) = pf.layers
    n = 256 * 256
    assert layer.codec == "rice"
    bits_per_weight = 8 * pf.mask_stream(0).size / n
    assert abs(bits_per_weight / binary_entropy(0.1) - 1) < 0.03, bits_per_weight
    assert binary_entropy(0.1) == pytest.approx(0.469, abs=1e-3)
    assert np.array_equal(decode_masks(pf)["0"], model[0].mask().numpy())


def test_half_density_mask_is_raw_packed_bits(tmp_path):
    model = nn.Sequential(nn.Linear(13, 101, bias=False))  # 1,313 weights: not a multiple of 8
    pemn.mask_(model, pemn.MaskConfig(density=0.5, strategy="dense"))
    pf = read_pemn(save(model, tmp_path / "half.pemn"))
    (layer,) = pf.layers
    assert layer.codec == "raw"
    assert pf.mask_stream(0).size == math.ceil(13 * 101 / 8) == 165
    assert np.array_equal(pf.mask_stream(0), np.packbits(model[0].mask().numpy().reshape(-1)))


# ---------------------------------------------------------------------------------------------
# the loader refuses


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    model, skeleton, x = make("user", "rp_copy")
    path = tmp_path_factory.mktemp("refuse") / "user.pemn"
    pemn.save(model, path)
    return path


def test_refuses_a_skeleton_with_another_layer_shape(user_file):
    """The caller's model is wrong for a valid file: a model error, not a file-format error."""
    with pytest.raises(ModelError, match="'head'") as info:
        pemn.load(user_file, device="cpu", model=UserNet(classes=12))
    assert not isinstance(info.value, FormatError)


def test_refuses_a_skeleton_without_a_layer(user_file):
    skeleton = UserNet()
    skeleton.seq = nn.Identity()
    with pytest.raises(ModelError, match="'seq'"):
        pemn.load(user_file, device="cpu", model=skeleton)


def test_refuses_a_file_without_architecture_and_no_skeleton(user_file):
    with pytest.raises(ModelError, match="model="):
        pemn.load(user_file, device="cpu")


def test_import_architecture_needs_trust_code(tmp_path, monkeypatch):
    module = f"pemn_evil_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "markers"
    marker.mkdir()
    (tmp_path / f"{module}.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}, 'imported').write_text('x')\n"
        "def build():\n"
        f"    pathlib.Path({str(marker)!r}, 'called').write_text('x')\n"
        "    import pemn_compress\n"
        "    return pemn_compress.create_model('test_convmixer')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model, _, x = make("zoo", "onelayer")
    path = save(model, tmp_path / "import.pemn", dense_dtype="float32", architecture=f"{module}:build")
    assert read_pemn(path).header["architecture"] == {"kind": "import", "target": f"{module}:build", "kwargs": {}}
    try:
        with pytest.raises(TrustError, match="trust_code"):
            pemn.load(path, device="cpu")
        assert list(marker.iterdir()) == [] and module not in sys.modules  # never imported, never called
        loaded = pemn.load(path, device="cpu", trust_code=True)  # the opt-in does run it
        assert sorted(p.name for p in marker.iterdir()) == ["called", "imported"]
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    finally:
        sys.modules.pop(module, None)


def _rewrite_metadata(src: Path, dst: Path, **changes) -> Path:
    tensors, metadata = decode_container(src.read_bytes())
    dst.write_bytes(encode_container({k: np.array(v) for k, v in tensors.items()}, {**metadata, **changes}))
    return dst


def test_refuses_a_newer_format_version(user_file, tmp_path):
    path = _rewrite_metadata(user_file, tmp_path / "v4.pemn", **{"pemn.version": "4"})
    with pytest.raises(VersionError, match="version 4"):
        pemn.load(path, device="cpu", model=UserNet())


@pytest.mark.parametrize("keep", [0, 7, 64, -1, -100])
def test_refuses_a_truncated_file(user_file, tmp_path, keep):
    path = tmp_path / "cut.pemn"
    path.write_bytes(user_file.read_bytes()[:keep])
    with pytest.raises(ContainerError):
        pemn.load(path, device="cpu", model=UserNet())


def _tensor_span(blob: bytes, name: str) -> tuple[int, int]:
    (n,) = struct.unpack("<Q", blob[:8])
    begin, end = json.loads(blob[8 : 8 + n])[name]["data_offsets"]
    return 8 + n + begin, 8 + n + end


def test_refuses_a_flipped_mask_byte(user_file, tmp_path):
    blob = bytearray(user_file.read_bytes())
    names = [k for k in decode_container(bytes(blob))[0] if k.startswith("mask")]
    assert names
    for name in names:
        begin, end = _tensor_span(bytes(blob), name)
        corrupt = bytearray(blob)
        corrupt[(begin + end) // 2] ^= 0x10
        path = tmp_path / "flipped.pemn"
        path.write_bytes(bytes(corrupt))
        with pytest.raises(ChecksumError):
            pemn.load(path, device="cpu", model=UserNet())


def test_refuses_more_weights_than_max_weights(user_file):
    total = read_pemn(user_file).plan.masked_weights
    with pytest.raises(LimitError, match="max_weights"):
        pemn.load(user_file, device="cpu", model=UserNet(), max_weights=total - 1)
    pemn.load(user_file, device="cpu", model=UserNet(), max_weights=total)


# ---------------------------------------------------------------------------------------------
# hostile files: bugs found while writing these tests (fixed; each test pins the fix)


def _container(header: bytes) -> bytes:
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header


def test_deeply_nested_container_header_is_a_format_error():
    with pytest.raises(ContainerError):
        read_pemn(_container(b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"))


@pytest.mark.parametrize("version", [1, 2])
def test_deeply_nested_pemn_header_is_a_format_error(version):
    model, _, _ = make("user", "rp_copy")
    blob = to_bytes(model, format_version=version)
    with pytest.raises(HeaderError, match="JSON"):
        read_pemn(edit_pemn(blob, text="[" * 100_000 + "]" * 100_000))


@pytest.mark.parametrize("version", ["\u00b2", "\u2460"])
def test_non_ascii_digit_version_is_a_header_error(user_file, tmp_path, version):
    path = _rewrite_metadata(user_file, tmp_path / "digit.pemn", **{"pemn.version": version})
    try:
        read_pemn(path)
    except FormatError:
        return
    pytest.fail("accepted a non-ASCII version number")


def _resign_header(src: Path, dst: Path, change) -> Path:
    """Copy a file with its PEMN header changed by ``change(header)`` and its header hash recomputed."""
    dst.write_bytes(edit_pemn(src.read_bytes(), header=change))  # the data checksum stays what it was
    return dst


def _real(t) -> bool:
    return isinstance(t, torch.Tensor) and not t.is_meta


class _AllocationSpy(TorchDispatchMode):
    """numel of every new non-meta tensor torch makes on this thread, whatever the route: factory
    functions (``nn.Linear`` building its weight), ``Module.to_empty`` (``empty_like``), copies and
    conversions. An output that shares storage with an input (views, in-place ops, ``from_numpy``)
    is not new. Observed at the dispatcher, below ``torch.device("meta")``, so it changes nothing."""

    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if _real(t)}
        self.sizes += [t.numel() for t in tree_leaves(out) if _real(t) and t.untyped_storage().data_ptr() not in inputs]
        return out


def _described(ref, path) -> tuple[int, int, int]:
    """(masked weights, dense leftovers, largest tensor) the file describes, from the reference reader."""
    out = ref.read(path)
    masked = [a.size for a in out["weights"].values()]
    dense = [a.size for a in out["dense"].values()]
    return sum(masked), sum(dense), max(masked + dense)


def test_zoo_load_allocates_the_model_once(tmp_path, reference_reader):
    model, _, _ = make("zoo", "onelayer")
    path = save(model, tmp_path / "m.pemn")
    masked, dense, largest = _described(reference_reader, path)
    with _AllocationSpy() as spy:
        loaded = pemn.load(path, device="cpu")
    entries = len(loaded.state_dict())
    assert sum(spy.sizes) >= masked, "the spy missed the model's allocation: it checks nothing"
    # the model once (masked weights + leftovers + one BatchNorm counter per entry at most) and the
    # leftovers once more in transit (converted from the file's float16): a second copy of the model
    # or a model larger than the file describes goes over
    assert sum(spy.sizes) <= masked + 2 * dense + entries, (sum(spy.sizes), masked, dense)
    assert max(spy.sizes) <= largest


def test_hostile_zoo_kwargs_are_refused_before_allocating(tmp_path, reference_reader):
    model, _, _ = make("zoo", "onelayer")
    path = save(model, tmp_path / "m.pemn")

    def inflate(header):
        header["architecture"]["kwargs"].update(dim=1024, depth=16)  # ~17 M weights; the file describes 1,216

    evil = _resign_header(path, tmp_path / "evil.pemn", inflate)
    with _AllocationSpy() as spy, pytest.raises((ShapeError, ModelError)):
        pemn.load(evil, device="cpu")
    assert sum(spy.sizes) <= _described(reference_reader, path)[0], spy.sizes  # the file's 1,216 at most, never 17 M


# ---------------------------------------------------------------------------------------------
# lean import


def test_import_is_lean_and_never_initializes_cuda():
    code = """
import sys
import pemn_compress as pemn
assert "torch" not in sys.modules, "import pemn_compress imported torch"
pemn.MaskConfig(density=0.3, strategy="mp"); pemn.PemnError; pemn.__version__; dir(pemn)
import pemn_compress.fileformat.reader, pemn_compress.fileformat.summary, pemn_compress.cli
assert "torch" not in sys.modules, "the reader, the summary or the CLI imported torch"
pemn.load  # a torch-dependent name: imports torch now
assert "torch" in sys.modules
import torch
assert not torch.cuda.is_initialized(), "importing the API initialized CUDA"
"""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
