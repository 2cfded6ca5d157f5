"""benchmarks/channel_scale.py: the learned per-channel scale multiplies each output channel as written
(a hand-checked layer), trains, and the report's paired differences are those of its raw CSV; run in
its quick mode on real Fashion-MNIST images."""

from __future__ import annotations

import re
import statistics

import pytest
import torch
from conftest import load_benchmark, read_csv
from torch import nn

import pemn_compress as pemn

cs = load_benchmark("channel_scale")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_scale_multiplies_its_output_channel():
    model = pemn.mask_(nn.Sequential(nn.Linear(3, 2, bias=False)), pemn.MaskConfig(density=1.0))
    x = torch.tensor([[1.0, 2.0, -1.0]])
    before = model(x).detach()
    assert cs.attach_scales(model) == 2
    with torch.no_grad():
        cs.learned_scales(model)[0].copy_(torch.tensor([2.0, -0.5]))
    weight = dict(pemn.masked_layers(model))["0"].materialized_weight()
    expected = torch.stack([2.0 * (weight[0] @ x[0]), -0.5 * (weight[1] @ x[0])])  # each row's dot product, scaled
    assert torch.allclose(model(x)[0], expected) and torch.allclose(model(x)[0], before[0] * torch.tensor([2, -0.5]))
    assert any(p is cs.learned_scales(model)[0] for p in model.parameters())  # the optimizer will see it


def test_quick_report_pairs_the_seeds(tmp_path):
    md = cs.main(["--quick", "--out", str(tmp_path), "--seeds", "0,1"])
    rows = read_csv(md.with_suffix(".csv"))
    acc = {(r["variant"], int(r["seed"])): 100 * float(r["accuracy"]) for r in rows}
    assert len(rows) == 6 and len(acc) == 6
    # test_convmixer's masked layers: stem, then depthwise and pointwise convs, then the head
    model = pemn.mask_(pemn.create_model("test_convmixer"), pemn.MaskConfig())
    layers = [layer for _, layer in pemn.masked_layers(model)]
    count = {"masks only": 0, "masks + per-channel scale": sum(layer.source.shape[0] for layer in layers),
             "masks + per-layer scale": len(layers)}  # fmt: skip
    for r in rows:
        assert int(r["scale_params"]) == count[r["variant"]]
        assert (float(r["scale_moved"]) > 0) == (r["variant"] != "masks only")  # the scales trained
    text = md.read_text().splitlines()
    for variant in ("masks + per-channel scale", "masks + per-layer scale"):
        deltas = [acc[(variant, s)] - acc[("masks only", s)] for s in (0, 1)]
        line = next(x for x in text if x.startswith(f"- {variant} against masks only:"))
        assert float(re.search(r": ([+-]\d+\.\d+) ±", line).group(1)) == pytest.approx(statistics.fmean(deltas),
                                                                                      abs=0.006)
        assert [float(x) for x in re.findall(r"s\d ([+-]\d+\.\d+)", line)] == pytest.approx(deltas, abs=0.006)
    # --resume keeps what ran and adds nothing
    cs.main(["--quick", "--out", str(tmp_path), "--seeds", "0,1", "--resume"])
    assert read_csv(md.with_suffix(".csv")) == rows


def test_a_per_layer_scale_is_one_number_per_layer():
    model = pemn.mask_(nn.Sequential(nn.Linear(3, 2, bias=False)), pemn.MaskConfig(density=1.0))
    x = torch.tensor([[1.0, 2.0, -1.0]])
    before = model(x).detach()
    assert cs.attach_scales(model, "layer") == 1
    with torch.no_grad():
        cs.learned_scales(model)[0].fill_(3.0)
    assert torch.allclose(model(x), 3.0 * before)
