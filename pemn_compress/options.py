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
from .errors import ConfigError, check_bool, check_int, check_number, option_error, worded
from .fileformat.constants import DENSE_DTYPES, FORMAT_VERSION, FORMAT_VERSIONS
from .fileformat.writer import DEFAULT_DENSE_DTYPE
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
ADDED_OPTIONS = {"score_scale": 1.0, "density_schedule": "constant"}


# ----------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class CompressOptions(JsonDataclass):
    """Everything ``compress`` needs, validated on construction; plain JSON via ``to_dict``."""

    _json_subject = "options"
    _json_fields = ("option", "options")

    model: str  # zoo name | state-dict file (.pt/.pth/.bin/.safetensors) | module:function | pickled module
    arch: str | None = None  # architecture of a state dict: zoo name or module:function
    arch_kwargs: dict = field(default_factory=dict)  # keyword arguments of the architecture (JSON values)
    # the mask (MaskConfig)
    strategy: str = "onelayer"  # dense | onelayer | mp | rp
    ratio: float | None = None  # rp only: unique values = int(N_max * ratio) + 1
    rp_mode: str = "rand"  # rp only: rand (tile then permute) | copy (tile in order: aliases with kernel shapes)
    density: float = DEFAULT_DENSITY  # fraction of each layer's weights the mask keeps
    density_schedule: str = "constant"  # constant | anneal: from dense down to `density` (recipe only)
    target_size: int | str | None = None  # file budget in bytes ("40KB", "40KiB"; stored as int): picks the density
    target_ratio: float | None = None  # file budget as dense fp32 file bytes / X: picks the density
    distribution: str = "signed_constant"  # signed_constant | normal | uniform (benchmarks/results/recipe_*)
    rescale: bool = True  # per-layer fan-in scale (False: the paper's mp/rp)
    learn_values: bool = False  # mp/rp: train the few unique values too
    seed: int = 0  # one seed: values, scores, data order, augmentation
    score_scale: float = 1.0  # initial scores: Kaiming-uniform, bound score_scale / sqrt(fan_in) (not in the file)
    # the data
    data: str = "fashion-mnist"  # see data.DATASET_SPECS
    data_root: str | None = None  # folder of a named data set (default: its environment variable / package path)
    max_train_samples: int | None = None  # class-stratified training subset, for quick runs
    augment: bool = False  # random crop + horizontal flip of training images (off: recipe_* and frontier_* results)
    # training (TrainConfig)
    epochs: int = 10
    batch_size: int = 128  # global batch (split across torchrun ranks)
    lr: float = 0.01
    optimizer: str = "adamw"  # adamw | sgd
    schedule: str = "cosine"  # cosine | onecycle | constant
    weight_decay: float = 5e-4  # on the mask scores and trained 2-D+ parameters (benchmarks/results/recipe_*)
    label_smoothing: float = 0.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    distill: bool | None = None  # None: on when the input carries trained weights
    distill_alpha: float = 0.5  # weight of the distillation term
    distill_temperature: float = 4.0
    # the output
    dense_dtype: str = DEFAULT_DENSE_DTYPE  # float16 (measured default) | float32 for the dense leftovers
    fold_batchnorm: bool = True  # store BatchNorm folded (deployment form); the checkpoint stays unfolded
    format_version: int = FORMAT_VERSION  # 2: compact deflated header; 1: for readers that know version 1 only
    output: str | None = None  # default: <input stem>.pemn in the current folder
    checkpoint_every: int | None = None  # steps; None: every epoch; 0: only on interruption
    resume: bool = False  # continue <output>.ckpt
    eval_batch_size: int = 500  # batch of the test-set evaluations
    threads: int | None = None  # torch.set_num_threads for the run (restored afterwards)
    allow_pickle: bool = False  # read a pickled nn.Module: runs code from the file

    def __post_init__(self) -> None:
        self._normalize_paths()
        self._check_names()
        self._check_arch_kwargs()
        self._check_values()
        self._check_target()
        self.mask_config()  # MaskConfig validates density, ratio, strategy, ...
        self.train_config(distill=False)

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
        if self.density_schedule not in DENSITY_SCHEDULES:
            choices = ", ".join(DENSITY_SCHEDULES)
            raise option_error("density_schedule", f"must be one of {choices}; found {self.density_schedule!r}")
        if self.dense_dtype not in DENSE_DTYPES:
            raise option_error("dense_dtype", f"must be one of {', '.join(DENSE_DTYPES)}; found {self.dense_dtype!r}")
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

    def train_config(self, distill: bool) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, lr=float(self.lr), optimizer=self.optimizer, schedule=self.schedule,
            weight_decay=float(self.weight_decay), label_smoothing=float(self.label_smoothing), amp=self.amp,
            distill_alpha=float(self.distill_alpha) if distill else 0.0,
            distill_temperature=float(self.distill_temperature), seed=self.seed,
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
    input_kind: str  # zoo | state_dict | safetensors | factory | pickle
    architecture: dict  # the reference written into the file
    dataset: str
    train_samples: int
    test_samples: int
    dense_accuracy: float | None  # test accuracy of the trained input (None: untrained input)
    accuracy: float | None  # test accuracy of the written file, as pemn.load loads it
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
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # the trained masked model

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "model"}
