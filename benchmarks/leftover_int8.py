"""Leftover precision: float16 against int8 for the dense leftovers (folded BatchNorm, biases).

The dense leftovers of a deploy-ready file are each BatchNorm's folded scale and shift plus the biases
(and any unmasked parameter). ``pemn.save`` stores them as float16 (measured default, see
``dense_dtype.py``). This benchmark asks whether int8 would do: for each model and seed it trains one
masked model briefly on Fashion-MNIST, writes it with float16 leftovers and BatchNorm folded, loads the
file, and evaluates the full test set with the leftovers as stored (float16) and with every floating
leftover tensor quantized to int8 and back:

- ``int8 symmetric``: ``q = round(x / s)``, ``s = max|x| / 127``, one float16 scale per tensor;
- ``int8 affine``: ``q = round((x - lo) / s)``, ``s = (hi - lo) / 255``, a float16 scale and offset per
  tensor (folded BatchNorm scales are mostly positive, so the affine grid uses the range better);
- ``int8, blocks of 16``: symmetric, one float16 scale per 16 consecutive values (per channel group);
- ``int8 affine, outliers float16``: affine over the values within 16 times the tensor's median |value|, the
  others kept in float16 with a 16-bit index each (4 bytes an outlier).

The int8 rows are simulated on the loaded model (the study came before format version 3, whose ``q8``
group stores the last variant: formats/pemn-v3.md, ``--dense-dtype int8``); their byte counts are what the
leftovers would take (1 byte per value plus 2 or 4 bytes per tensor, 2 per block, 3 more per outlier).
``--files`` measures trained files instead (the full-data report's). Accuracy deltas are paired: the same
trained masks, only the leftovers differ.

    PYTHONPATH=. python benchmarks/leftover_int8.py --out benchmarks/results/leftover_int8.md
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import _harness as h
import torch

import pemn_compress as pemn
from pemn_compress.data import BatchLoader, get_dataset
from pemn_compress.fileformat.constants import DENSE_PREFIX


def quantize_symmetric(x: torch.Tensor) -> torch.Tensor:
    """int8 symmetric per tensor, dequantized (float16 scale, as a file would store it)."""
    scale = float(torch.tensor(x.abs().max().item() / 127, dtype=torch.float16))
    if scale == 0.0:
        return torch.zeros_like(x)
    return torch.clamp(torch.round(x / scale), -127, 127) * scale


def quantize_affine(x: torch.Tensor) -> torch.Tensor:
    """int8 affine per tensor (256 levels between min and max), dequantized; float16 scale and offset."""
    lo = float(torch.tensor(x.min().item(), dtype=torch.float16))
    scale = float(torch.tensor((x.max().item() - lo) / 255, dtype=torch.float16))
    if scale == 0.0:
        return torch.full_like(x, lo)
    return torch.clamp(torch.round((x - lo) / scale), 0, 255) * scale + lo


def quantize_blocks(x: torch.Tensor, block: int = 16) -> torch.Tensor:
    """int8 symmetric with one float16 scale per block of ``block`` consecutive values (per channel
    group): an outlier (a folded BatchNorm channel with a tiny running variance) only coarsens its block."""
    flat = x.reshape(-1)
    out = torch.empty_like(flat)
    for start in range(0, flat.numel(), block):
        out[start : start + block] = quantize_symmetric(flat[start : start + block])
    return out.reshape(x.shape)


OUTLIER_FACTOR = 16  # a value whose |x| is over this many times the tensor's median |x| is an outlier


def outliers(x: torch.Tensor) -> torch.Tensor:
    """Where ``x`` has outliers: |x| over ``OUTLIER_FACTOR`` times its median |x| (a folded BatchNorm channel
    with a tiny running variance)."""
    magnitude = x.abs()
    return magnitude > OUTLIER_FACTOR * magnitude.median()


def quantize_outliers(x: torch.Tensor) -> torch.Tensor:
    """int8 affine over the values that are no outliers; the outliers kept in float16 (each stored with its
    16-bit index), so one large scale does not coarsen the grid of the others."""
    out = x.to(torch.float16).float()
    inliers = ~outliers(x)
    if inliers.any():
        out[inliers] = quantize_affine(x[inliers])
    return out


def outlier_bytes(x: torch.Tensor) -> int:
    """``quantize_outliers``'s storage: a byte per inlier, float16 scale and offset, 4 bytes per outlier."""
    count = int(outliers(x).sum())
    return x.numel() - count + 4 + 4 * count


VARIANTS = (  # (label, quantize, bytes per tensor beside a byte per value: a number, None: blocks, a function)
    ("float16", None, 0),
    ("int8 symmetric", quantize_symmetric, 2),
    ("int8 affine", quantize_affine, 4),
    ("int8, blocks of 16", quantize_blocks, None),
    ("int8 affine, outliers float16", quantize_outliers, outlier_bytes),
)


# the int8 leftovers pemn.save writes (format version 3: the last variant above in the q8 code, fileformat.q8), with
# the writer's cap on a file's float16 outliers (q8.OUTLIER_RESERVE) pinned: the file's leftovers as the package
# quantizes them and its reader decodes them, set into the loaded model (a folded file cannot be loaded masked to
# be written again)
WRITTEN = (("q8 as written, outliers <= 1 in 8", 8), ("q8 as written, outliers <= 1 in 32", 32))
LABELS = [label for label, _, _ in VARIANTS] + [label for label, _ in WRITTEN]


def written_row(path: Path, keys: list[tuple[str, int]], reserve: int, test) -> tuple[float, int]:
    """(accuracy, leftover bytes) of ``path``'s model with its floating leftovers as ``pemn.save(...,
    dense_dtype="int8")`` stores them when at most one value in ``reserve`` stays float16."""
    from pemn_compress.fileformat import q8

    model = pemn.load(path, device="cpu")
    state = model.state_dict()
    arrays = [state[key].float().numpy() for key, _ in keys]
    with h.pinned((("pemn_compress.fileformat.q8.OUTLIER_RESERVE", reserve),)):
        coded = [q8.quantize(a, k) for a, k in zip(arrays, q8.allot_outliers(arrays), strict=True)]
    stored = 0
    with torch.no_grad():
        for (key, numel), c in zip(keys, coded, strict=True):
            if c is None:  # stays float16, as loaded
                stored += 2 * numel
                continue
            stored += c.nbytes
            decoded = q8.dequantize(c.codes, c.lo, c.step, c.index, c.values, numel)
            state[key].copy_(torch.from_numpy(decoded).view_as(state[key]))
    return pemn.evaluate(model, test)[1], stored


def leftover_keys(path: Path) -> list[tuple[str, int]]:
    """(state-dict key, number of values) of the file's floating dense leftovers."""
    header = pemn.read_pemn(path).file_header
    return [(e.key, e.numel) for e in header.dense.tensors if e.group in ("f16", "f32")]


def evaluate_variant(path: Path, keys: list[tuple[str, int]], quantize, test) -> float:
    model = pemn.load(path, device="cpu")
    if quantize is not None:
        state = model.state_dict()
        with torch.no_grad():
            for key, _ in keys:
                state[key].copy_(quantize(state[key].float()).to(state[key].dtype))
    return pemn.evaluate(model, test)[1]


def worst_tensor(path: Path, keys: list[tuple[str, int]], quantize, test) -> dict:
    """The leftover tensor whose quantization alone costs the most accuracy, and how spread its values are."""
    state = {k: v.float() for k, v in pemn.load(path, device="cpu").state_dict().items()}
    worst: dict | None = None
    for key, numel in keys:
        accuracy = evaluate_variant(path, [(key, numel)], quantize, test)
        if worst is None or accuracy < worst["accuracy_alone"]:
            values = state[key].abs().reshape(-1)
            worst = {
                "tensor": key,
                "accuracy_alone": accuracy,
                "max": float(values.max()),
                "max_over_median": float(values.max() / values.median().clamp_min(1e-12)),
            }
    assert worst is not None
    return worst


def file_rows(path: Path, name: str, seed: int, test, simulated: bool = True) -> list[dict]:
    """Every variant of one `.pemn` file (float16 leftovers, BatchNorm folded): accuracy and bytes; without the
    simulated ones (but float16) when not ``simulated``."""
    file_bytes = path.stat().st_size
    dense_bytes = pemn.read_pemn(path).tensor_bytes(DENSE_PREFIX)
    keys = leftover_keys(path)
    values = sum(n for _, n in keys)
    rows = []
    state = pemn.load(path, device="cpu").state_dict()
    for label, quantize, per_tensor in VARIANTS if simulated else VARIANTS[:1]:
        if quantize is None:
            leftovers = dense_bytes
        elif per_tensor is None:  # a float16 scale per block of 16 values
            leftovers = values + 2 * sum(-(-numel // 16) for _, numel in keys)
        elif callable(per_tensor):
            leftovers = sum(per_tensor(state[key].float()) for key, _ in keys)
        else:
            leftovers = values + per_tensor * len(keys)
        accuracy = evaluate_variant(path, keys, quantize, test)
        rows.append(
            {
                "model": name,
                "seed": seed,
                "variant": label,
                "accuracy": accuracy,
                "leftover_bytes": leftovers,
                "file_bytes": file_bytes - dense_bytes + leftovers,
            }
        )
        if quantize is None:
            base = accuracy
        elif accuracy < base - 0.01 and not any("worst" in r for r in rows):
            # more than a point below float16: find the tensor that does it (once a file: 1 evaluation a tensor)
            rows[-1]["worst"] = worst_tensor(path, keys, quantize, test)
        print(rows[-1], flush=True)
    for label, reserve in WRITTEN:
        accuracy, leftovers = written_row(path, keys, reserve, test)
        rows.append({"model": name, "seed": seed, "variant": label, "accuracy": accuracy, "leftover_bytes": leftovers,
                     "file_bytes": file_bytes - dense_bytes + leftovers})
        print(rows[-1], flush=True)
    return rows


def run(args) -> list[dict]:
    if args.files:  # trained elsewhere (the full-data report's files): the full test set of Fashion-MNIST
        test = BatchLoader.from_dataset(get_dataset("fashion-mnist"), "test", batch_size=1000)
        return [row for i, path in enumerate(args.files)
                for row in file_rows(path, path.stem, i, test, simulated=not args.q8_only)]
    data = get_dataset("fashion-mnist").subset(args.train_samples, None, seed=0)
    test = BatchLoader.from_dataset(data, "test", batch_size=1000)
    rows = []
    for name in args.models.split(","):
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = pemn.create_model(name, in_chans=1, num_classes=10)
            pemn.mask_(model, pemn.MaskConfig(strategy="onelayer", seed=seed))
            train = BatchLoader.from_dataset(
                data, "train", batch_size=128, shuffle=True, crop_padding=2, hflip=True, drop_last=True, seed=seed
            )
            pemn.Trainer(model, train, test, pemn.TrainConfig(epochs=args.epochs, seed=seed)).fit()
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{name}.pemn"
                pemn.save(model, path, dense_dtype="float16", fold_batchnorm=True)
                rows += file_rows(path, name, seed, test, simulated=not args.q8_only)
    return rows


def render(rows: list[dict], args, command: str) -> str:
    if args.files:
        setup = (
            "The given `.pemn` files (trained elsewhere, float16 leftovers, BatchNorm folded); accuracy on the full "
            "Fashion-MNIST test set of each loaded file, leftovers as stored (float16) or quantized to int8 and back "
            "(simulated), and as `pemn.save(dense_dtype=\"int8\")` stores them (format version 3's q8 code, its "
            "float16 outliers capped as stated, decoded as the reader does). Deltas are paired (the same masks); one "
            "row per file."
        )
    else:
        setup = (
            f"Strategy onelayer, density 0.5, {args.epochs} epochs on {args.train_samples} Fashion-MNIST images, "
            f"seeds 0..{args.seeds - 1}; accuracy on the full test set of the loaded file, leftovers as stored "
            "(float16) or quantized to int8 and back (simulated), and as the int8 files pemn.save writes store "
            "them. Deltas are paired per seed (same masks)."
        )
    lines = [
        "# Leftover precision: float16 vs int8 (folded BatchNorm, biases)",
        "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}). {setup}",
        "",
        f"| model | leftovers | leftover bytes | file bytes | accuracy % {'' if args.files else '(mean of seeds) '}"
        "| change vs float16, pts (mean; min to max) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r["model"] for r in rows):
        base = {r["seed"]: r["accuracy"] for r in rows if r["model"] == name and r["variant"] == "float16"}
        for label in LABELS:
            mine = [r for r in rows if r["model"] == name and r["variant"] == label]
            if not mine:  # --q8-only
                continue
            deltas = [100 * (r["accuracy"] - base[r["seed"]]) for r in mine]
            lines.append(
                f"| {name} | {label} | {mine[0]['leftover_bytes']:,} | {mine[0]['file_bytes']:,} | "
                f"{100 * statistics.fmean(r['accuracy'] for r in mine):.2f} | "
                f"{statistics.fmean(deltas):+.2f} ({min(deltas):+.2f} to {max(deltas):+.2f}) |"
            )
    collapses = [r for r in rows if "worst" in r]
    if collapses:
        lines += [
            "",
            "Runs more than a point below float16 (the first of each file), and the one leftover tensor whose",
            "quantization alone costs the most (its largest |value| and that over its median |value|):",
            "",
            "| model | seed | leftovers | accuracy % | worst tensor | accuracy % with only it quantized | max "
            "| max / median |",
            "|---|---|---|---:|---|---:|---:|---:|",
        ]
        for r in collapses:
            w = r["worst"]
            lines.append(
                f"| {r['model']} | {r['seed']} | {r['variant']} | {100 * r['accuracy']:.2f} | `{w['tensor']}` | "
                f"{100 * w['accuracy_alone']:.2f} | {w['max']:.4g} | {w['max_over_median']:.3g} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="convmixer_64_4,resnet20")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=12000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    parser.add_argument(
        "--files", nargs="+", type=Path, metavar="PEMN", default=None,
        help="measure these trained .pemn files (float16 leftovers) instead of training --models",
    )
    parser.add_argument("--q8-only", action="store_true",
                        help="float16 and the q8 rows only (the leftovers as pemn.save stores them in int8)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "PYTHONPATH=. python benchmarks/leftover_int8.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    text = render(run(args), args, command.strip())
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
