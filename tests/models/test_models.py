"""Tests for the model zoo: registry behaviour, architecture references, and every ``test_*`` model.

New families are tested for free: the parametrized tests run over ``list_models("test_*")``;
real-sized models are only built on the meta device (no memory, no time).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import pemn_compress.models as zoo
from pemn_compress.config import MaskConfig
from pemn_compress.errors import ModelError, UnknownModelError
from pemn_compress.models import arch_of, create_model, list_models, model_entrypoint, register_model
from pemn_compress.strategies import make_plan
from pemn_compress.surgery import maskable_layers

TEST_MODELS = list_models("test_*")
ALL_MODELS = list_models()
FAMILIES = ("convmixer", "mlp", "resnet", "vit")


def family(name: str) -> str:
    return model_entrypoint(name).__module__.rsplit(".", 1)[-1]


def input_for(model: nn.Module, batch: int = 2) -> torch.Tensor:
    kw = arch_of(model)["kwargs"]
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, kw["in_chans"], kw["img_size"], kw["img_size"], generator=g)


def on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


# --------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_every_family_and_sorted_names():
    assert ALL_MODELS == sorted(ALL_MODELS)
    assert {family(n) for n in ALL_MODELS} == set(FAMILIES)
    for name in ALL_MODELS:
        assert name == name.lower() and "-" not in name and " " not in name
    assert set(TEST_MODELS) == {"test_convmixer", "test_mlp", "test_resnet", "test_vit"}
    assert list_models("convmixer_256_*") == ["convmixer_256_6", "convmixer_256_8"]
    assert list_models(["resnet2*", "mlp_*"]) == ["mlp_3", "resnet20"]
    assert list_models("nothing_*") == []


def test_every_family_registers_a_test_model():
    for fam in {family(n) for n in ALL_MODELS}:
        assert any(family(t) == fam for t in TEST_MODELS), f"family {fam} has no test_ model"


def test_expected_names_are_registered():
    expected = {
        "convmixer_256_6", "convmixer_256_8", "convmixer_512_8", "convmixer_192_6_p4", "convmixer_128_4",
        "convmixer_64_4", "resnet20", "resnet32", "resnet56", "vit_tiny_6", "vit_tiny_8", "vit_small_28", "mlp_3",
    }  # fmt: skip
    assert expected <= set(ALL_MODELS)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError, match="convmixer_256_8") as info:
        create_model("convmixer_256_9")
    assert isinstance(info.value, ModelError) and isinstance(info.value, KeyError)
    with pytest.raises(UnknownModelError, match="resnet20"):
        create_model("resnet-20")
    with pytest.raises(UnknownModelError, match="unknown model"):
        model_entrypoint("zzzzzz")


def test_unknown_kwarg_names_it_and_the_accepted_ones():
    with pytest.raises(ModelError, match="'widht'") as info:
        create_model("test_resnet", widht=4)
    assert "width" in str(info.value) and "num_classes" in str(info.value)
    assert not isinstance(info.value, UnknownModelError)


def test_invalid_values_raise_model_error_naming_the_model():
    with pytest.raises(ModelError, match="test_convmixer.*'dim'"):
        create_model("test_convmixer", dim=0)
    with pytest.raises(ModelError, match="'bias'"):
        create_model("test_mlp", bias=1)
    with pytest.raises(ModelError, match="img_size"):
        create_model("test_convmixer", img_size=0)
    with pytest.raises(ModelError, match="6n \\+ 2"):
        create_model("test_resnet", depth=10)
    with pytest.raises(ModelError, match="img_size=30, patch_size=7"):
        create_model("test_vit", img_size=30)
    with pytest.raises(ModelError, match="dim=16, heads=3"):
        create_model("test_vit", heads=3)
    with pytest.raises(ModelError, match="JSON"):
        create_model("test_mlp", hidden=object())
    with pytest.raises(ModelError, match="finite"):
        create_model("test_vit", mlp_ratio=float("nan"))


def test_register_model_refuses_bad_factories():
    def Bad_Name(*, x=1):  # noqa: N802
        return nn.Identity()

    with pytest.raises(ModelError, match="lower_snake_case"):
        register_model(Bad_Name)

    def no_default(*, x):
        return nn.Identity()

    with pytest.raises(ModelError, match="default"):
        register_model(no_default)

    def var_kwargs(**kwargs):
        return nn.Identity()

    with pytest.raises(ModelError, match="keyword"):
        register_model(var_kwargs)

    def test_resnet(*, x=1):  # same name, another function
        return nn.Identity()

    with pytest.raises(ModelError, match="already registered"):
        register_model(test_resnet)
    assert "no_default" not in list_models() and model_entrypoint("test_resnet") is zoo.resnet.test_resnet


# --------------------------------------------------------------------------------------------
# Architecture reference


@pytest.mark.parametrize("name", ALL_MODELS)
def test_arch_round_trips_through_json(name):
    model = on_meta(name)
    arch = arch_of(model)
    assert set(arch) == {"name", "kwargs"} and arch["name"] == name
    assert arch == model.pemn_arch and arch is not model.pemn_arch
    assert {"in_chans", "num_classes", "img_size", "bias"} <= set(arch["kwargs"])
    loaded = json.loads(json.dumps(arch))
    assert loaded == arch
    rebuilt = on_meta(loaded["name"], **loaded["kwargs"])
    assert arch_of(rebuilt) == arch
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}


def test_arch_holds_defaults_merged_with_caller_kwargs():
    arch = arch_of(create_model("test_vit", num_classes=3, mlp_ratio=3))
    assert arch == {
        "name": "test_vit",
        "kwargs": {
            "img_size": 28, "patch_size": 7, "in_chans": 1, "num_classes": 3, "dim": 16,
            "depth": 2, "heads": 2, "mlp_ratio": 3.0, "bias": False,
        },
    }  # fmt: skip
    assert isinstance(arch["kwargs"]["mlp_ratio"], float)  # 3 and 3.0 give the same reference
    numpy_int = pytest.importorskip("numpy").int64(5)
    assert arch_of(create_model("test_mlp", num_classes=numpy_int))["kwargs"]["num_classes"] == 5
    assert type(arch_of(create_model("test_mlp", num_classes=numpy_int))["kwargs"]["num_classes"]) is int


def test_arch_of_plain_and_wrapped_modules():
    assert arch_of(nn.Linear(2, 2)) is None
    model = create_model("test_mlp")
    wrapper = nn.Module()
    wrapper.module = model  # what DistributedDataParallel looks like
    assert arch_of(wrapper) == arch_of(model)


# --------------------------------------------------------------------------------------------
# Every test_ model


@pytest.mark.parametrize("name", TEST_MODELS)
def test_forward_shape(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(input_for(model))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", TEST_MODELS)
def test_forward_other_shapes(name):
    extra = {"patch_size": 4} if family(name) == "vit" else {}  # test_vit's patch 7 does not divide 32
    model = create_model(name, num_classes=7, in_chans=3, img_size=32, **extra).eval()
    with torch.no_grad():
        assert model(input_for(model)).shape == (2, 7)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, bias=True).train()
    model(input_for(model, batch=4)).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient at {pname}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_no_bias_by_default_and_bias_flag(name):
    layers = weight_layers(on_meta(name))
    assert layers and all(m.bias is None for m in layers)
    assert all(m.bias is not None for m in weight_layers(on_meta(name, bias=True)))


def test_vit_input_mismatch_is_a_clear_error():
    model = create_model("test_vit")
    with pytest.raises(ModelError, match=r"expected input \(B, 1, 28, 28\), found \(2, 1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32))


# --------------------------------------------------------------------------------------------
# Family specifics


def test_convmixer_256_8_layer_sizes():
    model = on_meta("convmixer_256_8")
    sizes = [m.weight.numel() for m in weight_layers(model)]
    assert max(sizes) == 256 * 256 == 65536
    layers = [(name, tuple(m.weight.shape)) for name, m in maskable_layers(model)]
    plan = make_plan(MaskConfig(strategy="rp", ratio=1e-3), layers)
    assert plan.unique_values == 66  # the paper's setting on this model: floor(65536 x 1e-3) + 1 = 65 + 1 values
    assert sum(sizes) == 8 * (6400 + 65536) + 3072 + 2560 == 581120
    largest = max(weight_layers(model), key=lambda m: m.weight.numel())
    assert isinstance(largest, nn.Conv2d) and largest.kernel_size == (1, 1)
    for name in ("convmixer_256_6", "convmixer_256_8"):
        assert max(m.weight.numel() for m in weight_layers(on_meta(name))) == 65536


def test_convmixer_structure():
    model = on_meta("convmixer_256_6")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    dw = [c for c in convs if c.groups > 1]
    assert len(dw) == 6 and all(c.groups == 256 and c.kernel_size == (5, 5) and c.padding == "same" for c in dw)
    assert model.stem[0].stride == (2, 2) and model.stem[0].kernel_size == (2, 2)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 256
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 1 + 2 * 6


@pytest.mark.parametrize("name", ["convmixer_192_6_p4", "convmixer_128_4", "convmixer_64_4"])
def test_small_convmixers_take_28x28(name):
    model = create_model(name).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_convmixer_192_6_p4_is_the_paper_shape_for_28x28():
    model = on_meta("convmixer_192_6_p4")
    assert sum(p.numel() for p in model.parameters()) == 259968  # within the 100k-600k of a paper-class model
    dw = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(dw) == 6 and all(c.kernel_size == (5, 5) for c in dw)  # the paper's depth 6, kernel 5
    assert model.stem[0].stride == (4, 4)  # 28x28 -> 7x7 feature maps
    assert max(m.weight.numel() for m in weight_layers(model)) == 192 * 192


def test_resnet_depths_and_shortcuts():
    for name, blocks in (("resnet20", 3), ("resnet32", 5), ("resnet56", 9)):
        model = on_meta(name)
        assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [blocks] * 3
        shortcuts = [b.shortcut for s in (model.layer1, model.layer2, model.layer3) for b in s]
        projections = [s for s in shortcuts if not isinstance(s, nn.Identity)]
        assert len(projections) == 2  # option B at the two stride-2 transitions
        assert all(isinstance(p[0], nn.Conv2d) and p[0].kernel_size == (1, 1) for p in projections)
        assert model.fc.in_features == 64
    model = create_model("test_resnet", img_size=32, in_chans=3).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_vit_attention_uses_plain_linear_layers():
    model = on_meta("vit_tiny_6")
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    attn = model.blocks[0].attn
    assert type(attn.qkv) is nn.Linear and (attn.qkv.in_features, attn.qkv.out_features) == (192, 576)
    assert type(attn.proj) is nn.Linear and (attn.proj.in_features, attn.proj.out_features) == (192, 192)
    assert isinstance(model.cls_token, nn.Parameter) and isinstance(model.pos_embed, nn.Parameter)
    assert tuple(model.pos_embed.shape) == (1, 65, 192)
    assert len(model.blocks) == 6 and len(on_meta("vit_tiny_8").blocks) == 8
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 6 + 1 and all(n.weight is not None and n.bias is not None for n in norms)


def test_vit_attention_matches_reference_multihead_attention():
    torch.manual_seed(0)
    dim, heads = 16, 2
    model = create_model("test_vit", dim=dim, heads=heads)
    attn = model.blocks[0].attn
    ref = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.out_proj.weight.copy_(attn.proj.weight)
    x = torch.randn(3, 5, dim)  # (B, N, C)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_mlp_layout():
    model = on_meta("mlp_3")
    linears = weight_layers(model)
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 512), (512, 512), (512, 10)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 3
