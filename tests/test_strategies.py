"""Value plans (pemn_compress.strategies) and MaskConfig validation.

Unique-value counts are checked against the paper's formula on ConvMixer-256 depth 6, whose layer
list is written out here by hand so the test does not depend on the model zoo.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from pemn_compress.config import DEFAULT_DENSITY, MaskConfig
from pemn_compress.errors import ConfigError
from pemn_compress.strategies import (
    PERMUTATION_STREAM_BASE,
    bank_index_map,
    bank_values,
    fan_in,
    kaiming_scale,
    make_plan,
)

PATCH = (256, 3, 2, 2)
DEPTHWISE = (256, 1, 5, 5)
POINTWISE = (256, 256, 1, 1)
CLASSIFIER = (10, 256)
DEPTH = 6


def convmixer_256_6():
    layers = [("stem.0", PATCH)]
    for i in range(DEPTH):
        layers.append((f"blocks.{i}.0.fn.0", DEPTHWISE))
        layers.append((f"blocks.{i}.1", POINTWISE))
    layers.append(("head", CLASSIFIER))
    return layers


LAYERS = convmixer_256_6()
N_MAX = 65536


def plan(**kw):
    return make_plan(MaskConfig(**kw), LAYERS)


# Kaiming scales sqrt(2 / fan_in) rounded to float32, by hand (bits in hex, to check with any float32 table):
#   fan-in 12 (patch):       sqrt(1/6)   = 0.4082482904638630 -> 0x3ED105EC = 0.40824830532073975
#   fan-in 25 (depthwise):   sqrt(0.08)  = 0.2828427124746190 -> 0x3E90D0C3 = 0.2828427255153656
#   fan-in 256 (pointwise, classifier): sqrt(1/128) = 0.0883883476483184 -> 0x3DB504F3 = 0.0883883461356163
SCALE_12, SCALE_25, SCALE_256 = 0.40824830532073975, 0.2828427255153656, 0.0883883461356163
HAND_SCALE = {PATCH: SCALE_12, DEPTHWISE: SCALE_25, POINTWISE: SCALE_256, CLASSIFIER: SCALE_256}


# ----------------------------------------------------------------------------------- counts
def test_dense_counts_every_weight():
    p = plan(strategy="dense")
    assert p.unique_values == sum(math.prod(s) for _, s in LAYERS) == 3072 + DEPTH * (6400 + 65536) + 2560
    assert p.masked_weights == p.unique_values
    assert len(p.banks) == len(LAYERS)
    assert [layer.bank for layer in p.layers] == list(range(len(LAYERS)))  # each layer its own bank
    assert [b.index for b in p.banks] == list(range(len(LAYERS)))


def test_onelayer_counts_one_prototype_per_shape():
    p = plan(strategy="onelayer")
    assert p.unique_values == 3072 + 6400 + 65536 + 2560
    assert len(p.banks) == 4
    by_name = {layer.name: layer for layer in p.layers}
    dw = {by_name[f"blocks.{i}.0.fn.0"].bank for i in range(DEPTH)}
    pw = {by_name[f"blocks.{i}.1"].bank for i in range(DEPTH)}
    assert len(dw) == 1 and len(pw) == 1 and dw != pw
    assert len({by_name["stem.0"].bank, by_name["head"].bank} | dw | pw) == 4
    for layer in p.layers:
        assert p.banks[layer.bank].size == layer.numel  # a bank is exactly one layer's worth of values


def test_mp_counts_n_max():
    p = plan(strategy="mp")
    assert p.unique_values == N_MAX
    assert len(p.banks) == 1 and p.banks[0].size == p.banks[0].length == N_MAX
    assert {layer.bank for layer in p.layers} == {0}


@pytest.mark.parametrize("ratio,expected", [(1e-3, 66), (1e-4, 7), (1e-5, 1), (1.0, N_MAX), (0.5, 32769)])
def test_rp_counts(ratio, expected):
    p = plan(strategy="rp", ratio=ratio, rp_mode="copy")
    assert p.unique_values == expected
    (bank,) = p.banks
    assert bank.size == expected
    assert bank.length == N_MAX  # tiled to the largest layer
    assert bank.tiling == "copy"
    assert all(layer.numel <= bank.length for layer in p.layers)


def test_rp_rand_mode_recorded():
    assert plan(strategy="rp", ratio=1e-3, rp_mode="rand").banks[0].tiling == "rand"


# ----------------------------------------------------------------------------------- scales
def test_fan_in_and_kaiming_scale():
    assert fan_in(PATCH) == 12 and fan_in(DEPTHWISE) == 25 and fan_in(POINTWISE) == 256 and fan_in(CLASSIFIER) == 256
    assert fan_in((8, 4, 3)) == 12  # Conv1d
    for shape, expected in HAND_SCALE.items():
        assert kaiming_scale(shape) == expected
    bits = [np.float32(v).view(np.uint32) for v in (SCALE_12, SCALE_25, SCALE_256)]
    assert bits == [0x3ED105EC, 0x3E90D0C3, 0x3DB504F3]  # the literals are those float32 values
    assert kaiming_scale((8, 4, 3)) == SCALE_12  # Conv1d: fan-in 4 x 3
    with pytest.raises(ConfigError):
        fan_in((5,))


@pytest.mark.parametrize("strategy,extra", [("dense", {}), ("onelayer", {}), ("mp", {}), ("rp", {"ratio": 1e-3})])
def test_rescale_true_gives_each_layer_its_own_scale(strategy, extra):
    p = plan(strategy=strategy, rescale=True, **extra)
    assert [layer.scale for layer in p.layers] == [HAND_SCALE[s] for _, s in LAYERS]
    assert len({layer.scale for layer in p.layers}) == 3  # 12, 25, 256 fan-ins


@pytest.mark.parametrize("strategy,extra",
                         [("mp", {}), ("rp", {"ratio": 1e-3}), ("rp", {"ratio": 1e-5, "rp_mode": "rand"})])
def test_paper_mode_inherits_largest_layer_scale(strategy, extra):
    p = plan(strategy=strategy, rescale=False, **extra)
    assert {layer.scale for layer in p.layers} == {SCALE_256}


@pytest.mark.parametrize("strategy", ["dense", "onelayer"])
def test_rescale_has_no_effect_for_dense_and_onelayer(strategy):
    assert plan(strategy=strategy, rescale=False) == plan(strategy=strategy, rescale=True)


def test_plan_records_config_and_layers_in_order():
    p = plan(strategy="onelayer", seed=77, distribution="uniform")
    assert (p.strategy, p.seed, p.distribution) == ("onelayer", 77, "uniform")
    assert [(layer.name, layer.shape) for layer in p.layers] == LAYERS


def test_make_plan_rejects_empty_and_duplicate_names():
    with pytest.raises(ConfigError):
        make_plan(MaskConfig(), [])
    with pytest.raises(ConfigError):
        make_plan(MaskConfig(), [("a", (4, 4)), ("a", (4, 4))])


# ----------------------------------------------------------------------------------- values and maps
def test_bank_values_come_from_stream_bank_index(reference_reader):
    p = make_plan(MaskConfig(strategy="dense", seed=5, distribution="uniform"), [("a", (4, 3)), ("b", (6, 2))])
    for bank in p.banks:
        v = bank_values(p, bank)
        assert v.dtype == np.float32 and v.shape == (bank.size,)
        expected = reference_reader.unit_values(5, bank.index, bank.size, "uniform")  # the spec's generator, in numpy
        np.testing.assert_array_equal(v.view(np.uint32), expected.view(np.uint32))
    assert not np.array_equal(bank_values(p, p.banks[0]), bank_values(p, p.banks[1])[:12])


def test_non_tiled_bank_has_no_index_map():
    p = plan(strategy="mp")
    assert bank_index_map(p, p.banks[0]) is None


def test_rp_copy_index_map_tiles():
    p = plan(strategy="rp", ratio=1e-3, rp_mode="copy")
    bank = p.banks[0]
    idx = bank_index_map(p, bank)
    assert idx.dtype == np.int64 and idx.shape == (N_MAX,)
    np.testing.assert_array_equal(idx, np.arange(N_MAX) % 66)


def test_rp_rand_index_map_is_a_permuted_tiling(reference_reader):
    p = plan(strategy="rp", ratio=1e-3, rp_mode="rand", seed=3)
    bank = p.banks[0]
    idx = bank_index_map(p, bank)
    copy = np.arange(N_MAX) % bank.size
    assert idx.shape == (N_MAX,)
    assert not np.array_equal(idx, copy)
    # the same multiset as the copy tiling: every unit value used, each as often as in copy mode
    np.testing.assert_array_equal(np.bincount(idx, minlength=bank.size), np.bincount(copy, minlength=bank.size))
    # the reference reader's rand tiling (formats/reference_reader.py, its own generator and sort)
    perm = reference_reader._permutation(3, reference_reader.PERMUTATION_STREAM_BASE + bank.index, N_MAX)
    np.testing.assert_array_equal(idx, perm % bank.size)
    assert reference_reader.PERMUTATION_STREAM_BASE == PERMUTATION_STREAM_BASE == 2**32  # spec 14.8
    # seeded: same seed same map, other seed other map
    np.testing.assert_array_equal(idx, bank_index_map(plan(strategy="rp", ratio=1e-3, rp_mode="rand", seed=3), bank))
    assert not np.array_equal(idx, bank_index_map(plan(strategy="rp", ratio=1e-3, rp_mode="rand", seed=4), bank))


def test_index_map_on_torch_device():
    torch = pytest.importorskip("torch")
    p = plan(strategy="rp", ratio=1e-4, rp_mode="rand")
    t = bank_index_map(p, p.banks[0], device="cpu")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64
    np.testing.assert_array_equal(t.numpy(), bank_index_map(p, p.banks[0]))


# ----------------------------------------------------------------------------------- MaskConfig
def test_defaults():
    c = MaskConfig()
    defaults = (0.35, "onelayer", None, 0, True, False)  # density: the full-data report's (test_frontier)
    assert (c.density, c.strategy, c.ratio, c.seed, c.rescale, c.learn_values) == defaults


@pytest.mark.parametrize("density", [0, 0.0, -0.1, 1.5, float("nan"), float("inf"), "x", "0.5", None, True, False])
def test_invalid_density(density):
    with pytest.raises(ConfigError):
        MaskConfig(density=density)


@pytest.mark.parametrize("density", [1e-6, 0.1, 0.5, 1.0, 1])
def test_valid_density(density):
    assert MaskConfig(density=density).density == density


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "rp"},  # no ratio
        {"strategy": "mp", "ratio": 1e-3},
        {"strategy": "onelayer", "ratio": 1e-3},
        {"strategy": "dense", "ratio": 1e-3},
        {"strategy": "rp", "ratio": 0},
        {"strategy": "rp", "ratio": 2},
        {"strategy": "rp", "ratio": -1e-3},
        {"strategy": "rp", "ratio": float("nan")},
        {"strategy": "rp", "ratio": True},
        {"strategy": "rp", "ratio": "1e-3"},
        {"strategy": "random"},
        {"strategy": "rp", "ratio": 1e-3, "rp_mode": "shuffle"},
        {"distribution": "gaussian"},
        {"learn_values": True, "strategy": "dense"},
        {"learn_values": True, "strategy": "onelayer"},
        {"seed": -1},
        {"seed": 1.5},
        {"seed": True},
        {"version": 2},
    ],
)
def test_invalid_configs(kwargs):
    with pytest.raises(ConfigError):
        MaskConfig(**kwargs)


def test_valid_learn_values():
    assert MaskConfig(strategy="mp", learn_values=True).learn_values
    assert MaskConfig(strategy="rp", ratio=1e-4, learn_values=True).learn_values


def test_config_is_frozen():
    c = MaskConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.density = 0.3  # type: ignore[misc]
    assert c.density == DEFAULT_DENSITY


@pytest.mark.parametrize(
    "config",
    [
        MaskConfig(),
        MaskConfig(density=0.25, strategy="rp", ratio=1e-4, rp_mode="rand", distribution="signed_constant",
                   rescale=False, seed=12345, learn_values=True, train_norm=False, train_bias=False, train_other=False),
        MaskConfig(strategy="mp", distribution="uniform"),
    ],
)
def test_json_round_trip(config):
    text = json.dumps(config.to_dict())
    back = MaskConfig.from_dict(json.loads(text))
    assert back == config
    assert back.to_dict() == config.to_dict()


def test_from_dict_rejects_unknown_fields_and_non_dicts():
    data = MaskConfig().to_dict()
    data["sparsity"] = 0.5
    with pytest.raises(ConfigError) as info:
        MaskConfig.from_dict(data)
    assert "sparsity" in str(info.value)
    with pytest.raises(ConfigError):
        MaskConfig.from_dict([("density", 0.5)])


def test_from_dict_validates():
    data = MaskConfig().to_dict()
    data["density"] = 2.0
    with pytest.raises(ConfigError):
        MaskConfig.from_dict(data)


def test_replace_validates():
    assert MaskConfig().replace(density=0.3).density == 0.3
    with pytest.raises(ConfigError):
        MaskConfig().replace(strategy="rp")
