"""Model surgery: ``mask_`` turns any ``nn.Module`` into a PEMN network in place; ``materialize``
turns it back into a plain dense module with identical outputs.

``mask_(model, MaskConfig(density=0.5, strategy="onelayer"), filter_fn=None)`` replaces every
``Linear``, ``Conv1d`` and ``Conv2d`` (grouped and depthwise included) that ``filter_fn(module, name)``
accepts with its masked counterpart, records ``model.pemn_config``, ``model.pemn_plan`` and
``model.pemn_values`` (the banks, in plan order: a plain list, not a submodule, so an
``nn.Sequential`` root still runs). Layers inside ``nn.MultiheadAttention`` are left dense: that
module reads its projection weights directly instead of calling them. What stays dense and trainable is decided by the
config's ``train_norm``, ``train_bias`` and ``train_other``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .config import MaskConfig
from .errors import ModelError
from .nn.layers import MaskedConv1d, MaskedConv2d, MaskedLayer, MaskedLinear, ValueBank
from .nn.topk import kept_count
from .strategies import ValuePlan, make_plan

__all__ = ["MASKABLE_TYPES", "is_masked", "mask_", "masked_layers", "materialize", "maskable_layers", "set_density_",
           "set_model_density_"]

# dense type -> masked type; dispatch walks the module's MRO, so subclasses of Linear are masked too
MASKABLE_TYPES: dict[type[nn.Module], type[MaskedLayer]] = {
    nn.Linear: MaskedLinear,
    nn.Conv1d: MaskedConv1d,
    nn.Conv2d: MaskedConv2d,
}

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)

FilterFn = Callable[[nn.Module, str], bool]


def _masked_type_for(module: nn.Module) -> type[MaskedLayer] | None:
    if isinstance(module, MaskedLayer):
        return None
    for base in type(module).__mro__:
        if base in MASKABLE_TYPES:
            return MASKABLE_TYPES[base]
    return None


def maskable_layers(model: nn.Module, filter_fn: FilterFn | None = None) -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers ``mask_`` would convert, in model order.

    Raises ``ModelError`` for a layer reachable under two names (it cannot be masked consistently).
    """
    inside_attention = {
        id(child)
        for m in model.modules() if isinstance(m, nn.MultiheadAttention)
        for child in m.modules() if child is not m
    }
    found: list[tuple[str, nn.Module]] = []
    names_of: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if _masked_type_for(module) is None or id(module) in inside_attention:
            continue
        if filter_fn is not None and not filter_fn(module, name):
            continue
        if id(module) in names_of:
            raise ModelError(
                f"layer {names_of[id(module)]!r} is also reachable as {name!r}: a shared layer cannot be masked; "
                "exclude it with filter_fn or give each use its own layer"
            )
        names_of[id(module)] = name
        found.append((name, module))
    return found


def masked_layers(model: nn.Module) -> Iterator[tuple[str, MaskedLayer]]:
    """(name, layer) of every masked layer, in model order."""
    for name, module in model.named_modules():
        if isinstance(module, MaskedLayer):
            yield name, module


def is_masked(model: nn.Module) -> bool:
    return getattr(model, "pemn_plan", None) is not None


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def mask_(model: nn.Module, config: MaskConfig | None = None, filter_fn: FilterFn | None = None) -> nn.Module:
    """Convert ``model`` in place into a PEMN network and return it.

    Raises ``ModelError`` when the model is already masked, has no layer to mask, or is itself a
    single layer (wrap it in an ``nn.Sequential`` first: a module cannot replace itself).
    """
    config = config or MaskConfig()
    if is_masked(model):
        raise ModelError("model is already masked (it has pemn_plan); materialize it first or build a fresh one")
    if _masked_type_for(model) is not None:
        raise ModelError(f"cannot mask a bare {type(model).__name__} in place; wrap it: nn.Sequential(layer)")
    layers = maskable_layers(model, filter_fn)
    if not layers:
        raise ModelError("no Linear/Conv1d/Conv2d layer to mask (check filter_fn)")
    plan = make_plan(config, [(name, tuple(layer_weight(module, name).shape)) for name, module in layers])
    device = layers[0][1].weight.device
    banks = [ValueBank(plan, spec, device, config.learn_values) for spec in plan.banks]  # in plan order
    generator = torch.Generator().manual_seed(config.seed)
    for source, (name, module) in zip(plan.layers, layers, strict=True):  # one plan entry per layer
        masked_type = _masked_type_for(module)
        if masked_type is None:  # unreachable: maskable_layers keeps only layers that have a masked type
            raise ModelError(f"layer {name!r} has no masked counterpart")
        masked = masked_type.from_dense(module, banks[source.bank], source, config.density, generator)
        _set_submodule(model, name, masked)
    object.__setattr__(model, "pemn_values", banks)  # a plain list: not a submodule of the root
    setattr(model, "pemn_config", config)  # noqa: B010 (nn.Module's __setattr__ is typed for tensors)
    setattr(model, "pemn_plan", plan)  # noqa: B010
    _set_trainable(model, config)
    return model


def set_density_(model: nn.Module, density: float) -> nn.Module:
    """Change a masked model's density in place and return it: each layer then keeps its
    ``kept_count(density, n)`` weights of largest ``|score|`` (a lower density keeps a subset of what
    the layer kept), and the recorded MaskConfig says the new density. ConfigError for a density
    outside (0, 1]; ModelError for a model that is not masked."""
    config = config_of(model).replace(density=density)  # validates the density
    for _, layer in masked_layers(model):
        layer.density = float(density)
        layer.kept = kept_count(density, math.prod(layer.source.shape))
    setattr(model, "pemn_config", config)  # noqa: B010 (nn.Module's __setattr__ is typed for tensors)
    return model


ALLOCATOR = "pemn_allocator"  # model attribute: a callable(model, density) that spreads a density over the layers


def set_model_density_(model: nn.Module, density: float) -> nn.Module:
    """Change a masked model's density keeping how it is spread over its layers, in place; return it.

    The code that lowers a model's density while it trains or after (``annealing.DensityAnnealing``, the
    budget fit of ``compress``) calls this rather than ``set_density_``: a model whose layers keep
    different fractions (an experiment's allocator, stored as the model's ``pemn_allocator`` attribute,
    a callable ``(model, density) -> model``) is re-allocated by that allocator; any other model keeps
    the same fraction in every layer (``set_density_``).
    """
    allocate = getattr(model, ALLOCATOR, None)
    return allocate(model, density) if allocate is not None else set_density_(model, density)


def _set_trainable(model: nn.Module, config: MaskConfig) -> None:
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(recurse=False)}
    bias_params = {id(m.bias) for _, m in masked_layers(model) if m.bias is not None}
    score_params = {id(m.scores) for _, m in masked_layers(model)}
    value_params = {id(p) for bank in values_of(model) for p in bank.parameters()}
    for p in model.parameters():
        if id(p) in score_params or id(p) in value_params:
            p.requires_grad_(True)
        elif id(p) in norm_params:
            p.requires_grad_(config.train_norm)
        elif id(p) in bias_params:
            p.requires_grad_(config.train_bias)
        else:
            p.requires_grad_(config.train_other)


def materialize(model: nn.Module) -> nn.Module:
    """Replace every masked layer by its dense type holding ``weight * mask``, in place.

    The result is a plain module (no banks, no scores) whose outputs equal the masked model's:
    the stored weight is bit-for-bit the tensor the masked forward multiplies inputs by.
    """
    for name, layer in list(masked_layers(model)):
        weight = layer.materialized_weight()
        dense = layer.dense_type.__new__(layer.dense_type)
        state = dict(layer.__dict__)
        for key in ("_parameters", "_buffers", "_modules"):
            state[key] = type(state[key])(state[key])
        for key in ("source", "density", "kept"):
            state.pop(key, None)
        dense.__dict__.update(state)
        del dense._parameters["scores"]
        del dense._buffers["_scale"]
        del dense._modules["value_bank"]
        dense.weight = nn.Parameter(weight, requires_grad=False)
        if name:
            _set_submodule(model, name, dense)
    for attr in ("pemn_values", "pemn_config", "pemn_plan"):
        model.__dict__.pop(attr, None)
    return model


# Typed access to what mask_ records on the model (nn.Module's __getattr__ is typed for tensors and
# submodules only); each raises ModelError for a model that is not masked.


def plan_of(model: nn.Module) -> ValuePlan:
    plan = getattr(model, "pemn_plan", None)
    if plan is None:
        raise ModelError("model is not masked: call pemn.mask_(model, config) first")
    return plan


def config_of(model: nn.Module) -> MaskConfig:
    config = getattr(model, "pemn_config", None)
    if not isinstance(config, MaskConfig):
        raise ModelError("model is not masked: call pemn.mask_(model, config) first")
    return config


def values_of(model: nn.Module) -> list[ValueBank]:
    """The value banks, in plan order."""
    values = getattr(model, "pemn_values", None)
    if not isinstance(values, list):
        raise ModelError("model is not masked: call pemn.mask_(model, config) first")
    return values


def layer_weight(module: nn.Module, name: str) -> torch.Tensor:
    """The ``weight`` tensor of a maskable (Linear/Conv) layer; ModelError when it has none."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ModelError(f"layer {name!r}: expected a weight tensor, found {type(weight).__name__}")
    return weight
