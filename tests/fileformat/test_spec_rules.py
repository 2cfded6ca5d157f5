"""Reader rules of formats/pemn-v1.md that a vector alone does not show on every path.

The vectors (formats/vectors/, tests/fileformat/test_vectors.py) pin each rule for both readers; here:
the streamed ``pemn.load`` path refuses non-finite files before generating anything, a whole model
that is one ``nn.Linear`` (layer ``""``) round-trips bit-exactly, the generated-bank bounds of section
10 hold and agree with the reference reader, and the state-dict key join.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO, edit_pemn, load_script
from torch import nn

import pemn_compress as pemn
from pemn_compress import api, errors, rng
from pemn_compress.keys import state_key

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VECTORS = REPO / "formats" / "vectors"
INVALID = json.loads((VECTORS / "invalid" / "expected.json").read_text())["vectors"]
NON_FINITE = ["scale_float32_max.pemn", "scale_over_bound.pemn", "values_inf.pemn", "values_large_scale_overflow.pemn",
              "values_nan.pemn"]


@pytest.fixture(scope="module")
def ref(reference_reader):
    return reference_reader


@pytest.fixture(scope="module")
def make_vectors():
    return load_script("formats/make_vectors.py", "pemn_make_vectors")


def test_the_non_finite_vectors_exist():
    assert set(NON_FINITE) <= set(INVALID)
    assert {INVALID[name]["error"] for name in NON_FINITE} == {"ShapeError"}


@pytest.mark.parametrize("name", NON_FINITE)
def test_streamed_load_refuses_non_finite_weights_before_generating(name, make_vectors, monkeypatch):
    """``pemn.load`` (the streamed path) gets the vector's error from ``decode``: no mask is
    decoded and no value generated or streamed first."""
    calls = []
    for target in ("check_masks", "stream_weights"):  # the names pemn.load calls (api imported them)
        monkeypatch.setattr(api, target, lambda *a, _t=target, **k: calls.append(_t))
    monkeypatch.setattr(rng, "unit_values", lambda *a, **k: calls.append("unit_values"))
    skeleton = make_vectors.SKELETONS["tiny_seq"]()
    with pytest.raises(errors.ShapeError, match=INVALID[name]["message"]):
        pemn.load(VECTORS / "invalid" / name, device="cpu", model=skeleton)
    assert calls == []


def test_root_linear_round_trips_bit_exactly(ref):
    """A file whose only layer is the root module loads into a bare ``nn.Linear``: its weight is the
    reference reader's, its bias the stored leftover, and it computes ``x @ W.T + b``."""
    path = VECTORS / "valid" / "linear_root_layer.pemn"
    out = ref.read(path)
    assert [layer["name"] for layer in out["header"]["layers"]] == [""] and set(out["dense"]) == {"bias"}
    model = pemn.load(path, device="cpu", model=nn.Linear(12, 5))
    assert model.weight.detach().numpy().tobytes() == out["weights"][""].tobytes()
    assert model.bias.detach().numpy().tobytes() == out["dense"]["bias"].tobytes()
    x = torch.from_numpy(rng.unit_values(7, 0, 24, "uniform").reshape(2, 12))
    expected = x @ torch.from_numpy(out["weights"][""]).T + torch.from_numpy(out["dense"]["bias"])
    assert torch.equal(model(x), expected)


def test_root_linear_shape_mismatch_is_a_model_error():
    with pytest.raises(errors.ModelError, match="shape"):
        pemn.load(VECTORS / "valid" / "linear_root_layer.pemn", device="cpu", model=nn.Linear(12, 6))


@pytest.mark.parametrize("distribution", rng.DISTRIBUTIONS)
def test_unit_bound_bounds_the_generator_and_matches_the_reference(distribution, ref):
    bound = rng.unit_bound(distribution)
    assert float(np.float32(bound)) == bound == ref.UNIT_BOUND[distribution]
    values = rng.unit_values(2**63 - 1, 2**32 + 3, 200_000, distribution)
    assert float(np.abs(values).max()) <= bound


def test_unit_bounds_are_the_spec_bits():
    bits = {d: int(np.float32(rng.unit_bound(d)).view(np.uint32)) for d in rng.DISTRIBUTIONS}
    assert bits == {"normal": 0x405DB3D6, "uniform": 0x3FDDB3D6, "signed_constant": 0x3F800000}


def test_state_key_joins_the_root_without_a_dot():
    assert state_key("", "weight") == "weight"
    assert state_key("0", "weight") == "0.weight"
    assert state_key("blocks.1.bn", "running_var") == "blocks.1.bn.running_var"


# formats/pemn-v1.md section 6.3, the "default" column: what an absent config field means in a file
SPEC_CONFIG_DEFAULTS = {"density": 0.5, "strategy": "onelayer", "rp_mode": "copy", "distribution": "normal",
                        "rescale": True, "seed": 0, "learn_values": False, "ratio": None, "train_norm": True,
                        "train_bias": True, "train_other": True, "version": 1}  # fmt: skip


def test_absent_config_fields_take_the_format_defaults_not_the_products(ref, make_vectors, tmp_path):
    """A file that leaves out every config field equal to the spec's default decodes to the weights the
    reference reader gives the complete file, although ``MaskConfig``'s own defaults (chosen by the recipe
    benchmark) differ: the product's defaults never change how a file decodes."""
    assert pemn.MaskConfig().distribution != SPEC_CONFIG_DEFAULTS["distribution"]  # the case this test is about
    path = VECTORS / "valid" / "cm_onelayer_d50.pemn"
    blob = path.read_bytes()
    expected = ref.read(path)["weights"]

    def drop_defaults(header: dict) -> None:
        config = header["config"]
        for key, value in SPEC_CONFIG_DEFAULTS.items():
            if key in config and config[key] == value:
                del config[key]
        assert "distribution" not in config and "strategy" not in config

    edited = tmp_path / "defaults_left_out.pemn"
    edited.write_bytes(edit_pemn(blob, header=drop_defaults))
    model = pemn.load(edited, device="cpu", model=make_vectors.SKELETONS["test_convmixer"]())
    masked = {name: m for name, m in model.named_modules() if name in expected}
    assert set(masked) == set(expected)
    for name, module in masked.items():
        assert module.weight.detach().numpy().tobytes() == expected[name].tobytes(), name
