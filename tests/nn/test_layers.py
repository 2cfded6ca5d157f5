"""Masked layers (pemn_compress.nn): frozen pseudo-random weights, trainable scores, exact top-k
masks with a straight-through gradient, and value banks shared by reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pemn_compress import rng
from pemn_compress.config import DEFAULT_DENSITY, MaskConfig
from pemn_compress.nn import (
    MaskedConv1d,
    MaskedConv2d,
    MaskedLayer,
    MaskedLinear,
    ValueBank,
    kept_count,
    ste_topk_mask,
    topk_mask,
)
from pemn_compress.strategies import bank_index_map, make_plan
from pemn_compress.surgery import mask_

# name -> (dense layer factory, input shape, masked type)
LAYER_CASES = {
    "linear": (lambda: nn.Linear(12, 6), (4, 12), MaskedLinear),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, padding=1), (2, 4, 9), MaskedConv1d),
    "conv2d": (lambda: nn.Conv2d(4, 6, 3, padding=1), (2, 4, 6, 6), MaskedConv2d),
    "grouped": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 6, 6), MaskedConv2d),
    "depthwise": (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), (2, 6, 6, 6), MaskedConv2d),
}
CASES = sorted(LAYER_CASES)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def masked_single(case: str, **config):
    """(sequential model, its masked layer, an input) for one layer type."""
    factory, in_shape, _ = LAYER_CASES[case]
    torch.manual_seed(0)
    model = mask_(nn.Sequential(factory()), MaskConfig(**config))
    x = torch.randn(in_shape, generator=torch.Generator().manual_seed(1))
    return model, model[0], x


def functional(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The dense op of ``layer`` with an explicit weight."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, layer.bias)
    conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
    return conv(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)


# ----------------------------------------------------------------------------------- types
@pytest.mark.parametrize("case", CASES)
def test_masked_type_keeps_dense_isinstance(case):
    _, layer, _ = masked_single(case)
    dense_type = type(LAYER_CASES[case][0]())
    assert type(layer) is LAYER_CASES[case][2]
    assert isinstance(layer, dense_type) and isinstance(layer, MaskedLayer)
    assert f"density={DEFAULT_DENSITY:g}," in repr(layer)


@pytest.mark.parametrize("case", CASES)
def test_weight_is_not_a_parameter_nor_in_state_dict(case):
    model, layer, _ = masked_single(case)
    assert not isinstance(layer.weight, nn.Parameter)
    assert not layer.weight.requires_grad
    assert tuple(layer.weight.shape) == tuple(layer.scores.shape)
    names = {n for n, _ in model.named_parameters()}
    expected = {"0.scores"} | ({"0.bias"} if layer.bias is not None else set())
    assert names == expected
    assert "weight" not in layer._parameters
    assert set(model.state_dict()) == expected
    assert isinstance(layer.scores, nn.Parameter) and layer.scores.requires_grad


# ----------------------------------------------------------------------------------- forward / backward
@pytest.mark.parametrize("case", CASES)
def test_forward_equals_dense_op_with_masked_weight(case):
    _, layer, x = masked_single(case)
    manual = layer.weight * layer.mask().to(torch.float32)
    assert torch.equal(layer(x), functional(layer, x, manual))
    assert torch.equal(layer.materialized_weight(), manual)


@pytest.mark.parametrize("case", CASES)
def test_gradient_reaches_scores_straight_through(case):
    _, layer, x = masked_single(case)
    upstream = torch.randn(layer(x).shape, generator=torch.Generator().manual_seed(2))
    (layer(x) * upstream).sum().backward()
    assert layer.scores.grad is not None
    assert layer.scores.grad.abs().sum() > 0

    # by hand: gradient w.r.t. the effective weight, times the fixed weight (dropped weights too),
    # passed through |scores| as in edge-popup's reference (GetSubnet.apply(scores.abs(), k)),
    # hence times sign(scores): growing |score| keeps a weight whatever the score's sign
    weight = layer.weight.detach()
    effective = (weight * layer.mask().to(torch.float32)).requires_grad_(True)
    (functional(layer, x, effective) * upstream).sum().backward()
    expected = effective.grad * weight * layer.scores.detach().sign()
    torch.testing.assert_close(layer.scores.grad, expected, rtol=1e-5, atol=1e-6)
    dropped = ~layer.mask()
    assert (layer.scores.grad[dropped] != 0).any()  # pruned weights still learn (edge-popup)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_weight_never_changes_while_training(case, optimizer):
    model, layer, x = masked_single(case)
    weight_before = layer.weight.clone()
    scores_before = layer.scores.detach().clone()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9) if optimizer == "sgd" else torch.optim.AdamW(params, lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    assert torch.equal(layer.weight, weight_before)
    assert not torch.equal(layer.scores.detach(), scores_before)


@pytest.mark.parametrize(
    "config",
    [
        {"strategy": "dense"},
        {"strategy": "onelayer"},
        {"strategy": "mp"},
        {"strategy": "rp", "ratio": 0.05},
        {"strategy": "rp", "ratio": 0.05, "rp_mode": "rand"},
    ],
)
def test_weights_frozen_for_every_fixed_strategy(config):
    model = mask_(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)), MaskConfig(**config))
    before = [model[i].weight.clone() for i in range(3)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(5, 8)
    for _ in range(3):
        opt.zero_grad()
        model[2](model[1](model[0](x))).square().mean().backward()
        opt.step()
    for i in range(3):
        assert torch.equal(model[i].weight, before[i])
    assert [p for bank in model.pemn_values for p in bank.parameters()] == []


# ----------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("density", [0.1, 0.5, 0.9, 1.0])
def test_mask_density_is_exact(case, density):
    _, layer, x = masked_single(case, density=density)
    n = layer.scores.numel()
    mask = layer.mask()
    assert mask.dtype == torch.bool and mask.shape == layer.scores.shape
    assert int(mask.sum()) == kept_count(density, n) == layer.kept
    if density < 1.0:  # the kept entries are the largest |scores|
        magnitude = layer.scores.detach().abs()
        assert magnitude[mask].min() > magnitude[~mask].max()
    assert int((layer.materialized_weight() != 0).sum()) == kept_count(density, n)


@pytest.mark.parametrize(
    "density,numel,expected",
    [
        (0.5, 10, 5),
        (0.5, 5, 3),  # halves round up
        (0.25, 2, 1),
        (0.1, 4, 1),  # floor(0.9) = 0, but a mask keeps at least one weight
        (1e-6, 1000, 1),
        (0.15, 10, 2),
        (0.9, 10, 9),
        (1.0, 7, 7),
        (0.999, 10, 10),
        (0.5, 1, 1),
    ],
)
def test_kept_count(density, numel, expected):
    assert kept_count(density, numel) == expected


@pytest.mark.parametrize("k", [1, 5, 31, 62])
def test_topk_mask_keeps_exactly_k_largest_magnitudes(k):
    scores = torch.randn(7, 9, generator=torch.Generator().manual_seed(k))
    mask = topk_mask(scores, k)
    assert mask.dtype == scores.dtype and mask.shape == scores.shape
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert int(mask.sum()) == k
    order = scores.abs().flatten().argsort(descending=True)
    assert torch.equal(mask.flatten().nonzero().flatten().sort().values, order[:k].sort().values)


def test_topk_mask_uses_magnitude_not_sign():
    scores = torch.tensor([-5.0, 0.1, 4.0, -0.2, 3.0])
    assert topk_mask(scores, 2).tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("k", [63, 100])
def test_topk_mask_all_kept(k):
    scores = torch.randn(7, 9)
    assert torch.equal(topk_mask(scores, k), torch.ones(7, 9))


def test_ste_topk_passes_gradient_through_abs():
    scores = torch.randn(4, 6, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    assert (scores < 0).any() and (scores > 0).any()
    upstream = torch.randn(4, 6)
    mask = ste_topk_mask(scores, 10)
    assert torch.equal(mask.detach(), topk_mask(scores.detach(), 10))
    (mask * upstream).sum().backward()
    # straight through the top-k (dropped entries too), then through |scores|
    assert torch.equal(scores.grad, upstream * scores.detach().sign())


# ----------------------------------------------------------------------------------- values
@pytest.mark.parametrize("distribution", ["normal", "signed_constant", "uniform"])
def test_layer_weight_is_generator_bits_times_scale(distribution, reference_reader):
    config = MaskConfig(strategy="dense", seed=31, distribution=distribution)
    model = mask_(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(5, 4)), config)
    # Kaiming scales by hand: fan-in 3 x 3 x 3 = 27, sqrt(2/27) = 0.27216552697... -> float32 0x3E8B5948;
    # fan-in 5, sqrt(2/5) = 0.63245553203... -> float32 0x3F21E89B
    scales = [0.27216553688049316, 0.6324555277824402]
    assert [np.float32(v).view(np.uint32) for v in scales] == [0x3E8B5948, 0x3F21E89B]
    for i, source in enumerate(model.pemn_plan.layers):
        assert source.scale == scales[i]
        unit = reference_reader.unit_values(31, i, source.numel, distribution)  # dense: bank i, the spec's generator
        expected = (unit * np.float32(scales[i])).reshape(source.shape)  # one float32 multiplication
        np.testing.assert_array_equal(model[i].weight.numpy().view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("case", CASES)
def test_scores_start_kaiming_uniform(case):
    _, layer, _ = masked_single(case)
    bound = 1.0 / math.sqrt(math.prod(layer.scores.shape[1:]))
    s = layer.scores.detach()
    assert s.abs().max() <= bound
    assert len(s.unique()) == s.numel()


# ----------------------------------------------------------------------------------- sharing
def three_linears(**config):
    return mask_(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)), MaskConfig(**config))


def test_onelayer_same_shape_shares_one_bank():
    model = three_linears(strategy="onelayer")
    a, b, c = model[0], model[1], model[2]
    assert a.value_bank is b.value_bank
    assert a.value_bank is not c.value_bank
    assert a.value_bank.values(64).data_ptr() == b.value_bank.values(64).data_ptr()
    assert torch.equal(a.weight, b.weight)  # same prototype, same scale
    assert len(model.pemn_values) == 2
    assert a.value_bank is model.pemn_values[a.source.bank]


def test_dense_layers_have_own_banks():
    model = three_linears(strategy="dense")
    assert model[0].value_bank is not model[1].value_bank
    assert not torch.equal(model[0].weight, model[1].weight)
    assert len(model.pemn_values) == 3


@pytest.mark.parametrize(
    "config",
    [{"strategy": "mp"}, {"strategy": "rp", "ratio": 0.1}, {"strategy": "rp", "ratio": 0.1, "rp_mode": "rand"}],
)
def test_mp_and_rp_layers_reference_the_single_bank(config):
    model = mask_(nn.Sequential(nn.Linear(8, 8), nn.Conv2d(3, 4, 3), nn.Linear(8, 3)), MaskConfig(**config))
    (bank,) = model.pemn_values
    ptrs = set()
    for i in range(3):
        assert model[i].value_bank is bank
        ptrs.add(model[i].value_bank.values(model[i].scores.numel()).data_ptr())
    assert len(ptrs) == 1  # every layer views the start of the same storage


@pytest.mark.parametrize("rp_mode", ["copy", "rand"])
def test_rp_fixed_bank_has_shared_table_of_n_max(rp_mode):
    model = mask_(nn.Sequential(nn.Linear(8, 8), nn.Conv2d(3, 4, 3), nn.Linear(8, 3)),
                  MaskConfig(strategy="rp", ratio=0.1, rp_mode=rp_mode, seed=4))
    (bank,) = model.pemn_values
    plan = model.pemn_plan
    n_max = 108  # Conv2d(3, 4, 3)
    assert bank.spec.size == int(n_max * 0.1) + 1 == 11 and bank.spec.length == n_max
    assert bank.table is not None and bank.table.shape == (n_max,)
    assert bank.unit.shape == (11,) and not isinstance(bank.unit, nn.Parameter)
    idx = torch.from_numpy(bank_index_map(plan, plan.banks[0]))
    assert torch.equal(bank.table, bank.unit[idx])
    for i in range(3):
        layer = model[i]
        n = layer.scores.numel()
        assert layer.value_bank.values(n).data_ptr() == bank.table.data_ptr()
        expected = rng.scaled_values(bank.table[:n], layer.source.scale).view(layer.source.shape)
        assert torch.equal(layer.weight, expected)
        assert len(torch.unique(layer.weight)) <= 11


@pytest.mark.parametrize(
    "config",
    [{"strategy": "rp", "ratio": 0.1, "rp_mode": "rand"}, {"strategy": "rp", "ratio": 0.1}, {"strategy": "mp"}],
)
def test_learned_values_are_parameters_that_train(config):
    model = mask_(
        nn.Sequential(nn.Linear(8, 8), nn.Conv2d(3, 4, 3), nn.Linear(8, 3)), MaskConfig(learn_values=True, **config)
    )
    (bank,) = model.pemn_values
    assert isinstance(bank.unit, nn.Parameter) and bank.unit.requires_grad
    assert bank.unit.numel() == bank.spec.size
    assert any(p is bank.unit for p in model.parameters())
    assert any(key.endswith("unit") for key in model.state_dict())
    before = [model[i].weight.detach().clone() for i in range(3)]

    x = torch.randn(5, 8)
    img = torch.randn(2, 3, 5, 5)
    loss = model[2](model[0](x)).square().mean() + model[1](img).square().mean()
    loss.backward()
    assert bank.unit.grad is not None and bank.unit.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    for i in range(3):
        assert not torch.equal(model[i].weight.detach(), before[i])
        # still the bank's (changed) values times the fixed scale
        n = model[i].scores.numel()
        assert torch.equal(model[i].weight, bank.values(n).view(model[i].source.shape) * model[i]._scale)


def test_value_bank_standalone_matches_plan():
    plan = make_plan(MaskConfig(strategy="rp", ratio=0.5, rp_mode="rand", seed=9), [("a", (6, 4)), ("b", (3, 3))])
    bank = ValueBank(plan, plan.banks[0])
    assert bank.values(24).shape == (24,)
    assert torch.equal(bank.values(9), bank.values(24)[:9])  # layers read prefixes
    assert "tiling=rand" in repr(bank)
