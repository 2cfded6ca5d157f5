"""What ``pemn compress`` is asked to do (``CompressOptions``), where it writes, and what it did (``CompressResult``).

``CompressOptions`` is validated on construction, so a bad value fails before any file is read, and
it round-trips through plain JSON (``to_dict`` / ``from_dict``, shared with ``MaskConfig``). The
options split into the *recipe* (everything that changes the written file: recorded in the file's
provenance, compared on ``--resume``) and the rest (``NON_RECIPE_FIELDS``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from torch import nn

from .budget import parse_size
from .config import DEFAULT_DENSITY, DENSITY_SCHEDULES, JsonDataclass, MaskConfig
from .defaults import ALLOCATIONS, default
from .errors import ConfigError, check_bool, check_int, check_number, option_error, worded
from .fileformat.constants import DENSE_DTYPES, FORMAT_VERSIONS
from .train import TrainConfig
from .usercode import is_reference

__all__ = [
    "ADDED_OPTIONS", "NON_RECIPE_FIELDS", "CompressOptions", "CompressResult", "default_output", "recipe",
    "resolve_output",
]  # fmt: skip

# Options that do not change the written file; everything else is part of the recipe and must
# match for --resume. (The resolved device type and the world size are added to the recipe.)
NON_RECIPE_FIELDS = ("output", "checkpoint_every", "resume", "threads", "allow_pickle", "device")
# Recipe options added after checkpoints were first written -> the value that does what runs did before
# the option existed: a checkpoint whose recipe lacks one was made with that value (and resumes with it).
ADDED_OPTIONS = {"score_scale": 1.0, "density_schedule": "constant", "allocation": "uniform"}


# ----------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class CompressOptions(JsonDataclass):
    """Everything ``compress`` needs, validated on construction; plain JSON via ``to_dict``."""

    _json_subject = "options"
    _json_fields = ("option", "options")

    model: str  # zoo name | state-dict file (.pt/.pth/.bin/.safetensors) | module:function | pickled module
    # every other field: its default, help and evidence are declared once in defaults.OPTIONS
    arch: str | None = default("arch")
    arch_kwargs: dict = field(default_factory=lambda: default("arch_kwargs"))
    strategy: str = default("strategy")
    ratio: float | None = default("ratio")
    rp_mode: str = default("rp_mode")
    density: float = default("density")
    density_schedule: str = default("density_schedule")
    allocation: str = default("allocation")
    target_size: int | str | None = default("target_size")
    target_ratio: float | None = default("target_ratio")
    distribution: str = default("distribution")
    rescale: bool = default("rescale")
    learn_values: bool = default("learn_values")
    seed: int = default("seed")
    score_scale: float = default("score_scale")
    data: str = default("data")
    data_root: str | None = default("data_root")
    max_train_samples: int | None = default("max_train_samples")
    augment: bool = default("augment")
    epochs: int = default("epochs")
    batch_size: int = default("batch_size")
    lr: float = default("lr")
    optimizer: str = default("optimizer")
    schedule: str = default("schedule")
    weight_decay: float = default("weight_decay")
    label_smoothing: float = default("label_smoothing")
    device: str = default("device")
    amp: bool = default("amp")
    distill: bool | None = default("distill")
    distill_alpha: float = default("distill_alpha")
    distill_temperature: float = default("distill_temperature")
    dense_dtype: str = default("dense_dtype")
    fold_batchnorm: bool = default("fold_batchnorm")
    format_version: int = default("format_version")
    output: str | None = default("output")
    checkpoint_every: int | None = default("checkpoint_every")
    resume: bool = default("resume")
    eval_batch_size: int = default("eval_batch_size")
    threads: int | None = default("threads")
    allow_pickle: bool = default("allow_pickle")

    def __post_init__(self) -> None:
        self._normalize_paths()
        self._check_names()
        self._check_arch_kwargs()
        self._check_values()
        self._check_target()
        self.mask_config()  # MaskConfig validates density, ratio, strategy, ...
        self.train_config()

    def _normalize_paths(self) -> None:
        for name in ("model", "output", "data_root", "data", "arch"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))

    def _check_names(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"model must be a zoo name, a file or module:function, found {self.model!r}")
        if not isinstance(self.data, str) or not self.data.strip():
            raise ConfigError(f"data must name a data set, found {self.data!r}")
        for name in ("arch", "data_root", "output"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty string or None, found {value!r}")

    def _check_arch_kwargs(self) -> None:
        """A dict of JSON values (they are written into the file), stored as its JSON round trip."""
        if not isinstance(self.arch_kwargs, dict) or not all(isinstance(k, str) for k in self.arch_kwargs):
            raise ConfigError(f"arch_kwargs must be a dict with string keys, found {self.arch_kwargs!r}")
        try:
            object.__setattr__(self, "arch_kwargs", json.loads(json.dumps(self.arch_kwargs, allow_nan=False)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"arch_kwargs must hold JSON values only: {exc}") from exc

    def _check_values(self) -> None:
        check_int("seed", self.seed, minimum=0)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        check_int("max_train_samples", self.max_train_samples, minimum=1, optional=True)
        check_int("checkpoint_every", self.checkpoint_every, minimum=0, optional=True)
        check_int("threads", self.threads, minimum=1, optional=True)
        check_number("lr", self.lr, low=0.0)
        check_number("score_scale", self.score_scale, low=0.0)
        check_number("weight_decay", self.weight_decay, low=0.0, low_open=False)
        check_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0, low_open=False)
        check_number("distill_alpha", self.distill_alpha, low=0.0, high=1.0)
        check_number("distill_temperature", self.distill_temperature, low=0.0)
        for name in ("rescale", "learn_values", "augment", "amp", "resume", "allow_pickle", "fold_batchnorm"):
            check_bool(name, getattr(self, name))
        check_bool("distill", self.distill, optional=True)
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise option_error("device", f"must be one of auto, cpu, cuda or cuda:N; found {self.device!r}")
        for name, values in (("density_schedule", DENSITY_SCHEDULES), ("allocation", ALLOCATIONS)):
            if (value := getattr(self, name)) not in ("auto", *values):
                raise option_error(name, f"must be one of {', '.join(('auto', *values))}; found {value!r}")
        if self.dense_dtype not in ("auto", *DENSE_DTYPES):
            raise option_error("dense_dtype", f"must be one of auto, {', '.join(DENSE_DTYPES)}; "
                                              f"found {self.dense_dtype!r}")
        if self.dense_dtype == "int8" and self.format_version == 1:
            raise option_error("dense_dtype", "int8 needs format version 3 (written for it from the default 2); "
                                              "format version 1 cannot store it")
        if self.format_version not in FORMAT_VERSIONS or isinstance(self.format_version, bool):
            raise option_error("format_version", f"must be one of {FORMAT_VERSIONS}; found {self.format_version!r}")

    def _check_target(self) -> None:
        """``target_size`` as bytes (int); at most one of target_size, target_ratio, and neither with a
        density other than the default (the target chooses it)."""
        if self.target_size is not None:
            object.__setattr__(self, "target_size", parse_size(self.target_size))
        check_number("target_ratio", self.target_ratio, low=0.0, optional=True)
        if self.target_size is not None and self.target_ratio is not None:
            raise worded(ConfigError, "--target-size and --target-ratio are mutually exclusive: give one budget")
        target = "--target-size" if self.target_size is not None else "--target-ratio"
        if self.target is not None and self.density != DEFAULT_DENSITY:
            raise worded(ConfigError, f"--density and {target} are mutually exclusive: {target} chooses the density")

    @property
    def target(self) -> int | float | None:
        """The file budget asked for (target_size in bytes or target_ratio), None without one."""
        return cast(int | None, self.target_size) if self.target_size is not None else self.target_ratio

    def mask_config(self) -> MaskConfig:
        return MaskConfig(
            density=self.density, strategy=self.strategy, ratio=self.ratio, rp_mode=self.rp_mode,
            distribution=self.distribution, rescale=self.rescale, seed=self.seed, learn_values=self.learn_values,
        )  # fmt: skip

    def train_config(self) -> TrainConfig:
        """The trainer's settings (distillation weighs in only when the trainer is given a teacher)."""
        return TrainConfig(
            epochs=self.epochs, lr=float(self.lr), optimizer=self.optimizer, schedule=self.schedule,
            weight_decay=float(self.weight_decay), label_smoothing=float(self.label_smoothing), amp=self.amp,
            distill_alpha=float(self.distill_alpha), distill_temperature=float(self.distill_temperature),
            seed=self.seed,
        )  # fmt: skip


def recipe(options: CompressOptions, *, distill: bool, device_type: str, world_size: int, input_kind: str) -> dict:
    """Every setting that changes the written file (provenance ``recipe``; compared on resume)."""
    settings = {k: v for k, v in options.to_dict().items() if k not in NON_RECIPE_FIELDS}
    settings.update(distill=distill, device_type=device_type, world_size=world_size, input_kind=input_kind)
    return settings


# ----------------------------------------------------------------------------------------------
# The output file


def _input_stem(spec: str) -> str:
    if is_reference(spec) and not Path(spec).exists():
        return spec.rsplit(":", 1)[1].rsplit(".", 1)[-1]
    return Path(spec).stem or "model"


def default_output(model: str) -> Path:
    """``<input stem>.pemn`` in the current folder."""
    return Path(f"{_input_stem(model)}.pemn")


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (None: they can). ``os.access`` says yes to root
    everywhere, so a temporary file is created and removed for real."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        fd, probe = tempfile.mkstemp(prefix=".pemn-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def resolve_output(options: CompressOptions) -> Path:
    """The file the run writes: ``options.output`` (a folder gets ``<input stem>.pemn`` inside it)
    or the default. Raises ``ConfigError`` before any training when the folder is missing or not
    writable, or when the output would overwrite the input model."""
    out = Path(options.output).expanduser() if options.output else default_output(options.model)
    if out.is_dir():
        out = out / default_output(options.model).name
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.exists():
        raise worded(ConfigError, f"output folder {folder} does not exist; create it or choose another --output")
    if not folder.is_dir():
        raise worded(ConfigError, f"output folder {folder} is not a folder; choose another --output")
    problem = _folder_problem(folder)
    if problem is not None:
        raise worded(ConfigError, f"cannot write to output folder {folder} ({problem}); choose another --output")
    if Path(options.model).is_file() and out.exists() and out.resolve() == Path(options.model).resolve():
        raise worded(ConfigError, f"the output {out} would overwrite the input model; choose another --output")
    return out


# ----------------------------------------------------------------------------------------------
# Result


@dataclass
class CompressResult:
    """What ``compress`` did; ``to_dict()`` is the CLI's ``--json`` document (``model`` excluded)."""

    output: str | None  # the .pemn written (None on torchrun ranks other than 0)
    input: str  # options.model
    input_kind: str  # zoo | state_dict | safetensors | factory | pickle | module
    architecture: dict  # the reference written into the file
    dataset: str
    train_samples: int | None  # None: data of unknown length
    test_samples: int | None
    dense_accuracy: float | None  # test accuracy of the trained input (None: untrained input, not classification)
    accuracy: float | None  # test accuracy of the written file, as pemn.load loads it (classification)
    file_bytes: int | None  # on-disk size of the .pemn
    dense_fp32_bytes: int | None  # on-disk size of the same model as a dense fp32 safetensors file
    ratio: float | None  # dense_fp32_bytes / file_bytes
    steps: int  # optimizer steps in total (resumed ones included)
    epochs: int
    train_seconds: float  # training time of this run (excludes time before a resume)
    seconds: float  # wall time of this run
    images_per_sec: float  # training throughput of this run (per rank)
    resumed: bool
    distill: bool
    device: str
    world_size: int
    rank: int
    options: dict  # every option as given
    history: list[dict]  # per epoch: epoch, train_loss, train_acc, eval_loss, eval_acc, ...
    warnings: list[str] = field(default_factory=list)
    target: dict | None = None  # with a target: budget_bytes, density chosen, the bounds (budget.BudgetChoice)
    metric_name: str = "accuracy"  # the task's metric (accuracy for classification)
    metric: float | None = None  # the written file's metric on the test data (= accuracy for classification)
    dense_metric: float | None = None  # the trained input's metric (None: untrained input, or no test data)
    higher_is_better: bool = True  # the metric's direction
    threads: int | None = None  # torch threads the run trained with
    density_schedule: str = "constant"  # the schedule trained with (`auto` resolved by the budget)
    allocation: str = "uniform"  # how the density was spread over the layers (`auto` resolved by the budget)
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # the trained masked model

    @property
    def density(self) -> float:
        """The density the masks were trained at (the target's choice with a budget)."""
        return float(self.target["density"] if self.target else self.options["density"])

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "model"}
