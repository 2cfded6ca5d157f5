"""Model surgery (pemn_compress.surgery): ``mask_`` on a user model that is in no zoo, trainability
flags, ``materialize`` equivalence, copies and devices, and determinism of the seed."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pemn_compress.config import MaskConfig
from pemn_compress.errors import ModelError
from pemn_compress.nn import MaskedConv1d, MaskedConv2d, MaskedLayer, MaskedLinear, kept_count
from pemn_compress.surgery import is_masked, mask_, maskable_layers, masked_layers, materialize

STRATEGIES = {
    "dense": {"strategy": "dense"},
    "onelayer": {"strategy": "onelayer"},
    "mp": {"strategy": "mp"},
    "mp_paper": {"strategy": "mp", "rescale": False},
    "mp_learned": {"strategy": "mp", "learn_values": True},
    "rp_copy": {"strategy": "rp", "ratio": 0.01},
    "rp_rand": {"strategy": "rp", "ratio": 0.01, "rp_mode": "rand"},
    "rp_one_value": {"strategy": "rp", "ratio": 1e-5, "distribution": "signed_constant"},
    "rp_learned": {"strategy": "rp", "ratio": 0.05, "learn_values": True},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class UserNet(nn.Module):
    """A two-input model with a bit of everything; not registered anywhere."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.seq_conv = nn.Conv1d(8, 8, 3, padding=1)
        self.ln = nn.LayerNorm(8)
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(16, 5, bias=True)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        e = self.embed(tokens).transpose(1, 2)  # (B, 8, T)
        s = self.ln(F.relu(self.seq_conv(e)).mean(-1))  # (B, 8)
        s = self.proj(s)
        z = F.relu(self.bn(self.conv(image)))  # (B, 8, H, W)
        z = F.relu(self.bn2(self.dw(z))).mean((2, 3))  # (B, 8)
        return self.head(torch.cat([s, z], dim=1))  # (B, 5)


MASKED = {
    "seq_conv": MaskedConv1d, "conv": MaskedConv2d, "dw": MaskedConv2d, "proj": MaskedLinear, "head": MaskedLinear
}


def inputs(batch: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 6, 6, generator=g), torch.randint(0, 16, (batch, 7), generator=g)


def user_net(**config) -> UserNet:
    torch.manual_seed(0)
    return mask_(UserNet(), MaskConfig(**config))


def train_steps(model: nn.Module, steps: int = 3) -> None:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for i in range(steps):
        image, tokens = inputs(seed=10 + i)
        target = torch.arange(image.shape[0]) % 5
        opt.zero_grad()
        F.cross_entropy(model(image, tokens), target).backward()
        opt.step()


# ----------------------------------------------------------------------------------- conversion
def test_mask_converts_exactly_linear_and_conv_layers():
    model = user_net()
    assert {name: type(layer) for name, layer in masked_layers(model)} == MASKED
    assert type(model.embed) is nn.Embedding and isinstance(model.embed.weight, nn.Parameter)
    assert type(model.bn) is nn.BatchNorm2d and type(model.ln) is nn.LayerNorm
    assert isinstance(model.conv, nn.Conv2d) and isinstance(model.dw, nn.Conv2d)
    assert isinstance(model.seq_conv, nn.Conv1d) and isinstance(model.head, nn.Linear)
    assert model.dw.groups == 8 and model.dw.padding == (1, 1)
    assert [layer.name for layer in model.pemn_plan.layers] == ["seq_conv", "conv", "dw", "proj", "head"]
    assert model.pemn_config == MaskConfig()
    image, tokens = inputs()
    assert model(image, tokens).shape == (6, 5)


def test_filter_fn_excludes_a_layer():
    torch.manual_seed(0)
    model = UserNet()
    proj_weight = model.proj.weight
    seen = []

    def keep(module, name):
        seen.append((type(module), name))
        return name != "proj"

    mask_(model, MaskConfig(), filter_fn=keep)
    assert (nn.Linear, "proj") in seen and (nn.Conv1d, "seq_conv") in seen
    assert type(model.proj) is nn.Linear and not isinstance(model.proj, MaskedLayer)
    assert model.proj.weight is proj_weight and isinstance(model.proj.weight, nn.Parameter)
    assert {name for name, _ in masked_layers(model)} == set(MASKED) - {"proj"}
    assert "proj" not in [layer.name for layer in model.pemn_plan.layers]
    assert maskable_layers(UserNet(), filter_fn=keep)[-1][0] == "head"


def test_sequential_root_still_runs_forward():
    # the most common user model: mask_ must not break nn.Sequential's forward, length or indexing
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(4, 3, 4)
    mask_(model, MaskConfig())
    assert model(x).shape == (4, 3)
    assert len(model) == 4
    assert isinstance(model[-1], MaskedLinear)


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"train_norm": False},
        {"train_bias": False},
        {"train_other": False},
        {"train_norm": False, "train_bias": False, "train_other": False},
    ],
)
def test_train_flags_control_requires_grad(flags):
    model = mask_(UserNet(), MaskConfig(**flags), filter_fn=lambda m, name: name != "proj")
    norm, bias, other = (flags.get(k, True) for k in ("train_norm", "train_bias", "train_other"))
    for module in (model.bn, model.bn2, model.ln):
        assert module.weight.requires_grad is norm and module.bias.requires_grad is norm
    for module in (model.seq_conv, model.head):  # masked layers with a bias
        assert module.bias.requires_grad is bias
    assert model.embed.weight.requires_grad is other
    assert model.proj.weight.requires_grad is other and model.proj.bias.requires_grad is other  # unmasked layer
    for _, layer in masked_layers(model):
        assert layer.scores.requires_grad  # always trained
    assert not any(t.requires_grad for t in model.buffers())


def test_train_flags_reach_the_optimizer():
    model = mask_(UserNet(), MaskConfig(train_norm=False, train_other=False))
    bn_before = model.bn.weight.detach().clone()
    emb_before = model.embed.weight.detach().clone()
    head_bias_before = model.head.bias.detach().clone()
    train_steps(model)
    assert torch.equal(model.bn.weight, bn_before)
    assert torch.equal(model.embed.weight, emb_before)
    assert not torch.equal(model.head.bias, head_bias_before)


def test_state_dict_has_scores_not_weights():
    model = user_net()
    keys = set(model.state_dict())
    for name in MASKED:
        assert f"{name}.scores" in keys and f"{name}.weight" not in keys
    assert "embed.weight" in keys and "bn.running_mean" in keys
    assert not any(k.startswith("pemn_values") for k in keys)


# ----------------------------------------------------------------------------------- errors
def test_masking_twice_raises():
    model = user_net()
    with pytest.raises(ModelError):
        mask_(model, MaskConfig())


def test_masking_a_bare_layer_raises():
    with pytest.raises(ModelError):
        mask_(nn.Linear(4, 4), MaskConfig())
    with pytest.raises(ModelError):
        mask_(nn.Conv2d(3, 4, 3), MaskConfig())


def test_nothing_maskable_raises():
    with pytest.raises(ModelError):
        mask_(nn.Sequential(nn.Embedding(4, 4), nn.LayerNorm(4)), MaskConfig())
    with pytest.raises(ModelError):
        mask_(UserNet(), MaskConfig(), filter_fn=lambda m, name: False)


# ----------------------------------------------------------------------------------- materialize
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_materialize_is_bit_identical_in_eval(name):
    model = user_net(density=0.4, **STRATEGIES[name])
    model.eval()
    image, tokens = inputs()
    with torch.no_grad():
        expected = model(image, tokens)
    expected_grad_mode = model(image, tokens).detach()
    weights = {n: layer.weight.detach().clone() for n, layer in masked_layers(model)}
    masks = {n: layer.mask().clone() for n, layer in masked_layers(model)}

    out = materialize(model)
    assert out is model
    with torch.no_grad():
        got = model(image, tokens)
    assert torch.equal(got, expected)
    assert torch.equal(got, expected_grad_mode)

    assert not any(isinstance(m, MaskedLayer) for m in model.modules())
    assert not hasattr(model, "pemn_values") and "pemn_values" not in dict(model.named_children())
    assert getattr(model, "pemn_plan", None) is None and getattr(model, "pemn_config", None) is None
    assert not any(k.startswith("pemn_values") or k.endswith("scores") for k in model.state_dict())
    for layer_name, masked_type in MASKED.items():
        layer = getattr(model, layer_name)
        assert type(layer) is masked_type.dense_type
        assert isinstance(layer.weight, nn.Parameter)
        assert torch.equal(layer.weight, weights[layer_name] * masks[layer_name])
        n = layer.weight.numel()
        assert int((layer.weight == 0).sum()) == n - kept_count(0.4, n)
        assert f"{layer_name}.weight" in model.state_dict()


@pytest.mark.parametrize("name", ["onelayer", "rp_rand", "rp_learned"])
def test_materialize_after_training(name):
    model = user_net(**STRATEGIES[name])
    train_steps(model)
    model.eval()
    image, tokens = inputs(seed=99)
    with torch.no_grad():
        expected = model(image, tokens)
    materialize(model)
    with torch.no_grad():
        got = model(image, tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert torch.equal(got, expected)


def test_materialized_model_is_a_plain_module():
    model = materialize(user_net(strategy="mp"))
    result = UserNet().load_state_dict(model.state_dict(), strict=True)  # same keys as the dense model
    assert not result.missing_keys and not result.unexpected_keys


# ----------------------------------------------------------------------------------- copies, devices
@pytest.mark.parametrize("name", ["onelayer", "mp", "rp_copy", "rp_learned"])
def test_deepcopy_keeps_sharing_within_the_copy(name):
    model = user_net(**STRATEGIES[name])
    clone = copy.deepcopy(model)
    originals = {id(b) for b in model.pemn_values}
    for (_, layer), (_, twin) in zip(masked_layers(model), masked_layers(clone), strict=True):  # clone: a deep copy
        assert twin.value_bank is clone.pemn_values[twin.source.bank]
        assert id(twin.value_bank) not in originals
        assert torch.equal(twin.weight, layer.weight)
    if name != "onelayer":  # one bank for every layer
        assert len({id(layer.value_bank) for _, layer in masked_layers(clone)}) == 1
    else:  # conv and dw both have shape (8, 1, 3, 3): one prototype
        assert clone.conv.value_bank is clone.dw.value_bank is clone.pemn_values[clone.conv.source.bank]
        assert len(clone.pemn_values) == len({layer.shape for layer in clone.pemn_plan.layers}) == 4
    image, tokens = inputs()
    model.eval(), clone.eval()
    assert torch.equal(model(image, tokens), clone(image, tokens))
    if name == "rp_learned":  # training the copy leaves the original's values alone
        before = model.pemn_values[0].unit.detach().clone()
        train_steps(clone)
        assert torch.equal(model.pemn_values[0].unit, before)
        assert not torch.equal(clone.pemn_values[0].unit, before)


@pytest.mark.parametrize("name", ["onelayer", "mp", "rp_rand", "rp_learned"])
def test_to_meta_keeps_bank_sharing(name):
    model = user_net(**STRATEGIES[name]).to("meta")
    for _, layer in masked_layers(model):
        assert layer.value_bank is model.pemn_values[layer.source.bank]
        assert layer.weight.device.type == "meta"
        assert layer.scores.device.type == "meta"
        assert layer.weight.shape == layer.scores.shape
    for bank in model.pemn_values:
        assert all(t.device.type == "meta" for t in list(bank.parameters()) + list(bank.buffers()))


def test_to_dtype_moves_banks_with_layers():
    model = user_net(strategy="mp").to(torch.float64)
    for _, layer in masked_layers(model):
        assert layer.weight.dtype == torch.float64 and layer.value_bank is model.pemn_values[0]
    image, tokens = inputs()
    assert model(image.double(), tokens).dtype == torch.float64


# ----------------------------------------------------------------------------------- determinism
def _snapshot(model):
    return {n: (layer.weight.clone(), layer.scores.detach().clone()) for n, layer in masked_layers(model)}


@pytest.mark.parametrize("name", ["dense", "rp_rand"])
def test_same_seed_same_bits_other_seed_other_bits(name):
    torch.manual_seed(1)
    a = _snapshot(mask_(UserNet(), MaskConfig(seed=7, **STRATEGIES[name])))
    torch.manual_seed(2)  # global RNG state must not matter
    torch.rand(5)
    b = _snapshot(mask_(UserNet(), MaskConfig(seed=7, **STRATEGIES[name])))
    c = _snapshot(mask_(UserNet(), MaskConfig(seed=8, **STRATEGIES[name])))
    for n in a:
        assert torch.equal(a[n][0], b[n][0]) and torch.equal(a[n][1], b[n][1])
        assert not torch.equal(a[n][1], c[n][1])
        assert not torch.equal(a[n][0], c[n][0])


# ----------------------------------------------------------------------------------- layers used by their parent
class AttnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x, need_weights=False)[0])  # (B, T, 3)


def test_every_masked_layer_is_really_masked_in_torch_attention():
    # nn.MultiheadAttention reads out_proj.weight directly (F.multi_head_attention_forward), never
    # calling out_proj.forward. A layer that mask_ converts must actually apply its mask: its
    # scores must learn and materialize must not change the outputs.
    torch.manual_seed(0)
    model = mask_(AttnNet(), MaskConfig(density=0.3)).eval()
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    model(x).square().sum().backward()
    for name, layer in masked_layers(model):
        assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0, f"{name}: mask bypassed"
    with torch.no_grad():
        expected = model(x)
    materialize(model)
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_a_layer_used_twice_is_refused_not_half_masked():
    # the same nn.Linear reachable under two names (reuse / tying) must not silently stay dense under
    # one of them: mask_ refuses it, naming both paths, and leaves the model untouched
    shared = nn.Linear(6, 6)
    model = nn.Module()
    model.a = shared
    model.b = shared
    with pytest.raises(ModelError, match="'a' is also reachable as 'b'"):
        mask_(model, MaskConfig())
    assert model.a is shared and model.b is shared and not is_masked(model)
    mask_(model, MaskConfig(), filter_fn=lambda module, name: name != "b")  # explicit opt-out works
    assert isinstance(model.a, MaskedLayer) and model.b is shared


def test_materialized_model_can_be_masked_again():
    model = materialize(user_net())
    mask_(model, MaskConfig(strategy="mp"))
    assert {name for name, _ in masked_layers(model)} == set(MASKED)
