"""Every option of ``pemn.compress`` / ``pemn compress``, declared once: its default, its help, its evidence.

Torch-free (``pemn --help`` stays instant). Everything else reads this table:

* the click options of ``pemn compress`` (``commands.py`` builds each ``--flag`` from its row);
* the fields of ``CompressOptions`` (``options.py``), ``MaskConfig`` (``config.py``) and ``TrainConfig``
  (``train.py``), whose defaults are ``default(name)``;
* ``pemn.compress(model, train, ..., **options)``, which takes ``CompressOptions``' fields.

A default that a measurement chose names its evidence (``Option.evidence``: a committed report under
``benchmarks/results/``). These are the *product's* defaults: they move with measurements. The
defaults a ``.pemn`` reader gives a config field absent from a file are another thing, pinned by the
format (``fileformat/header.py``, ``FORMAT_CONFIG_DEFAULTS``; formats/pemn-v1.md section 6.3), and
never change how an existing file decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._data_names import DATASET_ENV, DATASET_SPECS

__all__ = [
    "ALLOCATIONS", "ANNEAL_UP_TO_DENSITY", "BY_BUDGET", "DEFAULT_DENSITY", "DENSITY_SCHEDULES", "DISTRIBUTIONS",
    "ERK_UP_TO_DENSITY", "INT8_UP_TO_DENSITY", "OPTIMIZERS", "OPTIONS", "Option", "RP_MODES",
    "SCHEDULES", "SECTIONS", "STRATEGIES", "by_budget", "default", "density_schedule_for",
]  # fmt: skip

STRATEGIES = ("dense", "onelayer", "mp", "rp")
RP_MODES = ("copy", "rand")
# unit-variance value distributions the generator (rng.py) implements
DISTRIBUTIONS = ("normal", "signed_constant", "uniform")
DENSITY_SCHEDULES = ("constant", "anneal")  # how the density moves during training (annealing.py)
# The schedule by budget (full-data report, "Default density schedule" lines): annealing beat a constant density
# on every seed at --target-ratio 40, whose files train at density 0.0887, and lost on every seed at the default
# density 0.35; so `auto` anneals at densities up to the measured winning one and keeps it constant above.
ANNEAL_UP_TO_DENSITY = 0.0887
ALLOCATIONS = ("uniform", "erk")  # how a density is spread over the layers (allocation.py)
# Options an `auto` value resolves by the budget, once the density is known: name -> (the value at densities up
# to the bound, the value above it, the bound). The value above is also the longer text: it stands in the budget's
# trial header before the density is chosen. ERK allocation beat uniform on every seed at --target-ratio 40 (density
# 0.0886-0.0887, annealed) and at --target-ratio 60 (density 0.0264-0.0265, annealed), and was not measured at the
# default density: erk up to the largest density it won at.
ERK_UP_TO_DENSITY = 0.0887
BY_BUDGET = {
    "density_schedule": ("anneal", "constant", ANNEAL_UP_TO_DENSITY),
    "allocation": ("erk", "uniform", ERK_UP_TO_DENSITY),
}
# --dense-dtype auto with a budget: int8 leftovers where float16 leaves no density at all, and where float16's density
# is at most this and int8's is higher. 0: int8 was not measured to beat float16 where both fit (the full-data
# report's "Leftovers at the budget of --target-ratio 40" line decides it)
INT8_UP_TO_DENSITY = 0.0
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
DENSE_DTYPES = ("float32", "float16", "int8")

_FRONTIER = "benchmarks/results/frontier_fashion-mnist_convmixer_192_6_p4_cpu.md"
_RECIPE = "benchmarks/results/recipe_fashion-mnist_convmixer_192_6_p4_cpu.md"
_SIZE_ACCURACY = "benchmarks/results/size_accuracy_fashion-mnist_convmixer_64_4_cpu.md"
_DENSE_DTYPE = "benchmarks/results/dense_dtype_fashion-mnist_cpu.md"


@dataclass(frozen=True)
class Option:
    """One option: its Python name (a ``CompressOptions`` field), default and help, and how the CLI spells it.

    ``kind``: ``int``, ``float``, ``str``, ``choice`` (one of ``choices``), ``flag`` (``--name``, off by
    default), ``switch`` (``--name/--no-name``), ``size`` (bytes or "40KB"), ``kwargs`` (repeatable
    ``KEY=VALUE``), ``path``; ``cli``: the flags when they are not ``--name`` with dashes (None: not on
    the command line); ``evidence``: the committed measurement that chose the default, when one did.
    """

    name: str
    default: Any
    kind: str
    help: str
    section: str
    choices: tuple[str, ...] = ()
    cli: tuple[str, ...] | None = ()  # () -> ("--name-with-dashes",); None -> library only
    metavar: str | None = None
    evidence: str | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        """The command-line flags (empty for a library-only option)."""
        if self.cli is None:
            return ()
        if self.cli:
            return self.cli
        dashed = self.name.replace("_", "-")
        return (f"--{dashed}/--no-{dashed}",) if self.kind == "switch" else (f"--{dashed}",)


DEFAULT_DENSITY = 0.35  # the density row of the full-data report (see OPTIONS["density"].evidence)

_OPTIONS = (
    # ---------------------------------------------------------------- Input
    Option("arch", None, "str", section="Input", metavar="NAME",
           help="Architecture of a state-dict MODEL: a zoo name (e.g. convmixer_64_4), or module:function / "
                "module:Class from your own code (the current folder is importable). With --allow-pickle: "
                "module:Class where the class of a pickled MODEL saved from a script's __main__ lives now."),
    Option("arch_kwargs", {}, "kwargs", section="Input", cli=("--arch-kwarg",), metavar="KEY=VALUE",
           help="Architecture argument (repeatable; VALUE is JSON, else a string), e.g. --arch-kwarg in_chans=3."),
    Option("allow_pickle", False, "flag", section="Input",
           help="Read a MODEL file that holds a whole pickled module (torch.save(model)). This runs code from the "
                "file; only for files you trust. Its class must be importable (a module in the current folder "
                "counts); one defined in the saving script's __main__ needs --arch module:Class."),
    Option("data", "fashion-mnist", "str", section="Input",
           help="Data set: " + ", ".join(DATASET_SPECS) + ". Named sets are found in --data-root, else their "
                f"environment variable ({', '.join(DATASET_ENV.values())}), else (Fashion-MNIST) the Debian package "
                "dataset-fashion-mnist. A module:function returns arrays, or torch data: (train, test) Datasets or "
                "DataLoaders. In Python: the name recorded for the train=/test= objects you pass."),
    Option("data_root", None, "path", section="Input", metavar="DIR",
           help="Folder of a named data set (default: its environment variable, see --data)."),
    Option("max_train_samples", None, "int", section="Input", metavar="N",
           help="Train on a class-stratified subset of N images, for quick runs (default: the whole training "
                "split; the test split is always evaluated in full). Array data only."),
    # ---------------------------------------------------------------- Method
    Option("strategy", "onelayer", "choice", section="Method", choices=STRATEGIES,
           help="Where the fixed values come from: own values per layer (dense), one prototype per weight shape "
                "(onelayer), one max-layer vector (mp), a small random vector (rp, needs --ratio)."),
    Option("ratio", None, "float", section="Method",
           help="rp only: the vector has int(N_max * ratio) + 1 values, e.g. 1e-3."),
    Option("rp_mode", "rand", "choice", section="Method", choices=RP_MODES, evidence=_SIZE_ACCURACY,
           help="rp only: tile the vector then permute it (rand), or tile it in order (copy; when the vector "
                "length divides a kernel's size every kernel repeats one pattern: 8 points worse on "
                "convmixer_64_4)."),
    Option("density", DEFAULT_DENSITY, "float", section="Method", evidence=_FRONTIER,
           help="Fraction of each layer's weights the mask keeps, in (0, 1]. The default is the density whose "
                "files met both goals of the full-data report: within 1.0 point of dense training, >= 25x smaller "
                "(masks are entropy-coded: 0.5 costs a full bit per weight)."),
    Option("density_schedule", "auto", "choice", section="Method", choices=("auto", *DENSITY_SCHEDULES),
           evidence=_FRONTIER,
           help="constant: train at the density from the first step (edge-popup). anneal: start with every "
                "weight kept and remove the lowest-score ones gradually (cubic) until the density is reached at "
                "75% of the steps; the file is the same size. auto: by the budget, as the full-data report decided "
                f"it: anneal at densities up to {ANNEAL_UP_TO_DENSITY:g} (it beat constant on every seed at "
                "--target-ratio 40), constant above (it lost at the default density); the file records which."),
    Option("allocation", "auto", "choice", section="Method", choices=("auto", *ALLOCATIONS), evidence=_FRONTIER,
           help="How the density is spread over the layers. uniform: every layer keeps the same fraction (the "
                "paper). erk: Erdős–Rényi-kernel scaling under the same byte budget: small layers (depthwise "
                "convolutions, the classifier) keep more, large ones fewer, and the entropy-coded masks keep more "
                "weights in all. auto: by the budget, as the full-data report decided it: erk at densities up to "
                f"{ERK_UP_TO_DENSITY:g} (it beat uniform on every seed at --target-ratio 40 and 60), uniform above "
                "(the paper's; erk was not measured there); the file records which."),
    Option("target_size", None, "size", section="Method", metavar="SIZE",
           help="Choose the density so that the file is at most SIZE bytes whatever training learns: 40000, "
                f"40KB (40,000), 40KiB (40,960), 1.5MB, 2MiB. The largest density up to the default "
                f"({DEFAULT_DENSITY:g}) whose size bound fits; an error before training when even one kept weight "
                "per layer does not. Not with --density."),
    Option("target_ratio", None, "float", section="Method", metavar="X",
           help="Like --target-size, with the budget the dense fp32 safetensors file's size / X (file at least X "
                "times smaller). Not with --density or --target-size."),
    Option("distribution", "signed_constant", "choice", section="Method", choices=DISTRIBUTIONS, evidence=_RECIPE,
           help="Distribution of the fixed values before the per-layer scale: signed_constant (+1/-1), normal (sum "
                "of four uniforms), uniform (on -sqrt 3..sqrt 3); all have unit variance. signed_constant beat "
                "normal on every seed of the recipe benchmark."),
    Option("rescale", True, "switch", section="Method",
           help="Scale every layer to its own fan-in (--no-rescale reproduces the paper's mp/rp)."),
    Option("learn_values", False, "flag", section="Method",
           help="mp/rp: train the few unique values too (stored in the file)."),
    Option("seed", 0, "int", section="Method",
           help="One seed for the fixed values, the initial scores, the training subset, data order and "
                "augmentation."),
    Option("score_scale", 1.0, "float", section="Method", evidence=_RECIPE,
           help="Size of the initial mask scores: uniform in +-SCALE/sqrt(fan_in) (edge-popup's Kaiming bound at "
                "1; x10 and x0.1 lost on every seed of the recipe benchmark). Scores are not stored: the file does "
                "not change."),
    # ---------------------------------------------------------------- Training
    Option("epochs", 10, "int", section="Training", evidence=_FRONTIER,
           help="Passes over the training set (or the --max-train-samples subset); the learning-rate schedule "
                "spans them all. Time grows linearly with it."),
    Option("batch_size", 128, "int", section="Training", evidence=_RECIPE,
           help="Training images per optimizer step, global (split across torchrun processes); batch 256 lost on "
                "every seed of the recipe benchmark. A DataLoader you pass brings its own."),
    Option("lr", 0.01, "float", section="Training", evidence=_RECIPE,
           help="Peak learning rate of the mask scores and the other trained parameters (norms, biases, learned "
                "values); x2 and x0.5 lost in the recipe benchmark. Scores only need to change order, so a large "
                "rate suits them."),
    Option("optimizer", "adamw", "choice", section="Training", choices=OPTIMIZERS,
           help="adamw: AdamW (torch defaults, decoupled weight decay); sgd: SGD with Nesterov momentum 0.9."),
    Option("schedule", "cosine", "choice", section="Training", choices=SCHEDULES, evidence=_RECIPE,
           help="Learning rate over the run: cosine (linear warm-up over the first half epoch, then cosine decay to "
                "0), onecycle (torch's OneCycleLR: up from --lr/25 to --lr over the first 30% of steps, then down "
                "to near 0; lost in the recipe benchmark), constant (--lr throughout)."),
    Option("weight_decay", 5e-4, "float", section="Training", evidence=_RECIPE,
           help="Weight decay on the mask scores (and on any other trained parameter with 2+ dimensions); never on "
                "norms, biases or learned values. 0 turns it off. 5e-4 beat 5e-5 and 0 on every seed of the recipe "
                "benchmark."),
    Option("label_smoothing", 0.0, "float", section="Training", evidence=_RECIPE,
           help="Cross-entropy label smoothing, in [0, 1): 0.1 moves 10% of each target onto a uniform "
                "distribution over the classes (it lost in the recipe benchmark). 0: hard labels."),
    Option("augment", False, "switch", section="Training", evidence=_FRONTIER,
           help="Random crop + horizontal flip of training images (array data). Off by default: on the full "
                "Fashion-MNIST training set it cost accuracy on every seed, at 3 epochs (recipe benchmark) and at "
                "10 (full-data report); it may help long runs on small training sets. Never for digits or text."),
    Option("distill", None, "switch", section="Training", evidence=_RECIPE,
           help="Distil from the dense MODEL while training the masks. Default: on when MODEL carries trained "
                "weights (a state dict, a pickled module, a module you pass in Python) whose accuracy is above "
                "chance, off for a zoo name or factory (+0.48 points on every seed of the recipe benchmark)."),
    Option("distill_alpha", 0.5, "float", section="Training",
           help="Weight of the distillation term, in (0, 1]: loss = (1 - alpha) x cross-entropy + alpha x T^2 x "
                "KL(teacher || student). Only with --distill."),
    Option("distill_temperature", 4.0, "float", section="Training",
           help="Temperature T (> 0) dividing teacher and student logits in the distillation term: higher T gives "
                "softer targets that carry more of the teacher's ranking of the wrong classes. Only with --distill."),
    # ---------------------------------------------------------------- Output
    Option("output", None, "path", section="Output", cli=("-o", "--output"), metavar="PATH",
           help="Output file (default: <MODEL stem>.pemn here)."),
    Option("dense_dtype", "auto", "choice", section="Output", choices=("auto", *DENSE_DTYPES), evidence=_DENSE_DTYPE,
           help="Storage of the parameters that stay dense (BatchNorm, biases). float16 halves their bytes (no "
                "accuracy change measured); int8 quarters them (one byte a value on a 256-level grid per tensor, the "
                "values far outside it kept in float16; -0.07 to +0.01 points on the full-data report's 40x and 60x "
                "files; with a --target-size / --target-ratio budget at most one value in 32, the others joining the "
                "grid) and needs format version 3. auto: float16, or int8 where the budget has no room for float16 "
                "leftovers."),
    Option("fold_batchnorm", True, "switch", section="Output", evidence=_DENSE_DTYPE,
           help="Store each BatchNorm folded into one scale and shift per channel: a smaller file for deployment "
                "(the accuracy reported is that of this file). Such a file cannot be loaded for further training "
                "(pemn.load(masked=True)); --no-fold-batchnorm keeps the running statistics. Checkpoints stay "
                "unfolded either way."),
    Option("format_version", 2, "int", section="Output", evidence="benchmarks/results/header_sizes.md",
           help="File format: 2 stores a compact, deflated header (smaller files); 1 is for readers that only "
                "know format version 1 (formats/pemn-v1.md); 3 is 2 with int8 leftovers (formats/pemn-v3.md), "
                "written whenever the leftovers are int8, and only then. pemn-compress reads all three."),
    Option("checkpoint_every", None, "int", section="Output", metavar="STEPS",
           help="Write <output>.ckpt every STEPS optimizer steps (default: after every epoch; 0: only on Ctrl-C or "
                "a crash)."),
    Option("resume", False, "flag", section="Output",
           help="Continue from <output>.ckpt (same options required)."),
    Option("eval_batch_size", 500, "int", section="Output",
           help="Test images per batch when measuring accuracy (recorded in the file, so pemn eval reproduces it)."),
    # ---------------------------------------------------------------- Runtime
    Option("device", "auto", "choice", section="Runtime", choices=("auto", "cpu", "cuda"),
           help="Where to train: auto (CUDA when available, else the CPU), cpu, or cuda (cuda:N in Python)."),
    Option("amp", True, "switch", section="Runtime",
           help="bfloat16 autocast on CUDA, faster (no effect on CPU); the accuracy recorded in the file is "
                "measured without it."),
    Option("threads", None, "int", section="Runtime", metavar="N",
           help="CPU threads torch uses during the run. Default: the cores this process may run on, less those "
                "other programs keep busy (1-minute load average), so a loaded machine is not oversubscribed; "
                "the run says when it chose fewer."),
)

OPTIONS: dict[str, Option] = {option.name: option for option in _OPTIONS}
# help headings of `pemn compress --help`, in display order (the CLI adds its own flags: --json, --quiet)
SECTIONS = ("Input", "Method", "Training", "Output", "Runtime")


def by_budget(name: str, density: float, asked: str = "auto") -> str:
    """What a run trains with for the ``BY_BUDGET`` option ``name``: ``asked`` unless ``auto``, then the budget's."""
    if asked != "auto":
        return asked
    low, high, up_to = BY_BUDGET[name]
    return low if density <= up_to else high


def density_schedule_for(density: float, asked: str = "auto") -> str:
    """The schedule a run trains with: ``asked`` unless ``auto``, then the budget's (``ANNEAL_UP_TO_DENSITY``)."""
    return by_budget("density_schedule", density, asked)


def default(name: str) -> Any:
    """The declared default of option ``name`` (a copy for a mutable default)."""
    value = OPTIONS[name].default
    return dict(value) if isinstance(value, dict) else value
