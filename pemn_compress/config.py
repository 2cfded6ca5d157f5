"""``MaskConfig``: every choice that defines a PEMN network besides its architecture.

A config is a frozen dataclass validated in ``__post_init__`` and serialized as plain JSON (no
pickle), so the same object drives training, is written into the `.pemn` header and rebuilds the
network at load time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .defaults import DEFAULT_DENSITY, DENSITY_SCHEDULES, DISTRIBUTIONS, RP_MODES, STRATEGIES, default
from .errors import ConfigError, check_number, option_error

__all__ = [
    "DEFAULT_DENSITY", "DENSITY_SCHEDULES", "DISTRIBUTIONS", "JsonDataclass", "MaskConfig", "RP_MODES", "STRATEGIES",
]  # fmt: skip

# the vocabularies and the product's defaults are declared once, torch-free, in defaults.py
_J = TypeVar("_J", bound="JsonDataclass")


class JsonDataclass:
    """Plain-JSON round trip for a frozen dataclass validated in ``__post_init__``.

    ``to_dict`` gives plain values; ``from_dict`` refuses anything but a dict of known fields, so a
    typo never passes silently; ``replace`` copies with changes, validated again. Subclasses name
    themselves in the two error messages: ``_json_subject`` ("a MaskConfig must be a JSON object")
    and ``_json_fields`` (singular and plural: "unknown MaskConfig field(s) ...; known fields are ...").
    """

    _json_subject: ClassVar[str]
    _json_fields: ClassVar[tuple[str, str]]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses

    @classmethod
    def from_dict(cls: type[_J], data: Any) -> _J:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls._json_subject} must be a JSON object, found {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            one, many = cls._json_fields
            raise ConfigError(f"unknown {one}(s) {unknown}; known {many} are {sorted(known)}")
        return cls(**data)

    def replace(self: _J, **changes: Any) -> _J:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class MaskConfig(JsonDataclass):
    """How a model is turned into a PEMN network.

    Fields are grouped as: what the masks keep, where the fixed values come from, and what stays
    dense and trainable.
    """

    _json_subject = "a MaskConfig"
    _json_fields = ("MaskConfig field", "fields")

    density: float = default("density")  # fraction of each masked layer's weights the mask keeps (the paper's k)
    strategy: str = default("strategy")  # value source: own values per layer (dense), one per weight shape
    # (onelayer), one max-layer vector (mp) or a small random vector (rp)
    ratio: float | None = default("ratio")  # rp only: the vector has int(N_max * ratio) + 1 values
    rp_mode: str = default("rp_mode")  # rp only: tile then permute with a seeded permutation (rand) or tile (copy)
    distribution: str = default("distribution")  # unit values: signed_constant (+-1), normal (Irwin-Hall(4)), uniform
    rescale: bool = default("rescale")  # each layer scaled to its own Kaiming fan-in std; False: the paper's mp/rp
    seed: int = default("seed")  # one seed for the values, the permutation and the score initialization
    learn_values: bool = default("learn_values")  # rp/mp: the unique values become trainable (stored anyway)
    train_norm: bool = True  # BatchNorm/LayerNorm/GroupNorm affine parameters are trained (paper: yes)
    train_bias: bool = True  # biases of masked layers are trained
    train_other: bool = True  # every other parameter that is not masked (embeddings, unmasked layers)
    version: int = 1  # bumped when a field changes meaning

    def __post_init__(self) -> None:
        if isinstance(self.density, bool) or not isinstance(self.density, (int, float)):
            raise option_error("density", f"must be a number in (0, 1], found {self.density!r}")
        if not (0.0 < float(self.density) <= 1.0) or math.isnan(self.density):
            raise option_error("density", f"must be in (0, 1] (the fraction of weights kept), found {self.density}")
        if self.strategy not in STRATEGIES:
            raise option_error("strategy", f"must be one of {', '.join(STRATEGIES)}; found {self.strategy!r}")
        if self.strategy == "rp":
            if self.ratio is None:
                raise ConfigError("strategy 'rp' needs a ratio in (0, 1], for example ratio=1e-3")
            number = not isinstance(self.ratio, bool) and isinstance(self.ratio, (int, float))
            if not (number and 0.0 < self.ratio <= 1.0):
                raise option_error("ratio", f"must be in (0, 1], found {self.ratio!r}")
        elif self.ratio is not None:
            raise option_error(
                "ratio", f"applies to strategy 'rp' only; found ratio={self.ratio} with strategy {self.strategy!r}"
            )
        if self.rp_mode not in RP_MODES:
            raise option_error("rp_mode", f"must be one of {', '.join(RP_MODES)}; found {self.rp_mode!r}")
        if self.distribution not in DISTRIBUTIONS:
            choices = ", ".join(DISTRIBUTIONS)
            raise option_error("distribution", f"must be one of {choices}; found {self.distribution!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not (0 <= self.seed < 1 << 63):
            raise option_error("seed", f"must be an integer in [0, 2**63), found {self.seed!r}")
        for flag in ("rescale", "learn_values", "train_norm", "train_bias", "train_other"):
            if not isinstance(getattr(self, flag), bool):
                raise option_error(flag, f"must be True or False, found {getattr(self, flag)!r}")
        if self.learn_values and self.strategy not in ("mp", "rp"):
            raise ConfigError(
                "learn_values applies to strategies 'mp' and 'rp' (the ones with one small shared vector)"
            )
        if type(self.version) is not int or self.version != 1:
            raise ConfigError(f"MaskConfig version {self.version} is not supported (this library writes version 1)")

    @classmethod
    def for_target(cls, model: Any, *, target_size: int | str | None = None, target_ratio: float | None = None,
                   dense_dtype: str = "float16", fold_batchnorm: bool = False, architecture: Any = None,
                   provenance: Any = None, format_version: int = 2, **config_fields: Any) -> MaskConfig:
        """A config whose file is guaranteed within a budget, whatever the masks learn (``budget.py``).

        ``model``: the unmasked module (not changed); exactly one of ``target_size`` (bytes: ``40000``,
        ``"40KB"``, ``"40KiB"``) and ``target_ratio`` (file <= dense fp32 safetensors file / ratio);
        ``dense_dtype``, ``fold_batchnorm``, ``architecture``, ``provenance``, ``format_version``: as the
        ``pemn.save`` call that will write the file (a provenance that grows after training, e.g. an accuracy, should
        hold ``budget.WORST_FLOAT`` there); ``config_fields``: the other MaskConfig fields (not
        density: the budget chooses it). The density is ``DEFAULT_DENSITY`` when its bound fits, else the largest
        below it that fits; ConfigError when even one kept weight per layer does not fit. With
        ``dense_dtype="int8"`` the budget counts one float16 outlier in ``q8.OUTLIER_RESERVE`` values, the most
        ``pemn.save(target_size=...)`` keeps; it refuses a file that is over all the same.
        """
        from .budget import Trial, budget_bytes, choose_density, parse_size

        if "density" in config_fields:
            raise ConfigError("density and a target are mutually exclusive: the target chooses the density")
        if (target_size is None) == (target_ratio is None):
            raise ConfigError("give exactly one of target_size and target_ratio")
        check_number("target_ratio", target_ratio, low=0.0, optional=True)
        config = cls(**config_fields)
        size = None if target_size is None else parse_size(target_size)
        trial = Trial(model, config, provenance=lambda density: provenance, dense_dtype=dense_dtype,
                      fold_batchnorm=fold_batchnorm, architecture=architecture, format_version=format_version)
        budget = budget_bytes(target_size=size, target_ratio=target_ratio, dense_fp32_bytes=trial.dense_fp32_bytes())
        choice = choose_density(trial, budget, target_size=size, target_ratio=target_ratio)
        return config.replace(density=choice.density)
