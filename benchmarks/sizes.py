"""On-disk size of `.pemn` files against the dense fp32 safetensors file of the same model.

Masks do not need training to be measured for size (at a given density the raw codec is exactly one
bit per weight, and the rice codec depends only on the density), so this writes freshly masked zoo
models with each storage option and reports what `pemn inspect` reports: file bytes, the dense fp32
file's bytes, the on-disk ratio, the paper's formula ratio, and the distance to the information bound
of the file: the masks' n*H(kept/n) bits, the dense leftovers at float16 with every BatchNorm as 2 values
per channel (folded), and the stored values. Every zoo model (``pemn.list_models()`` without the tiny
``test_`` ones) and a small user model (``user_small``: 5 masked layers, 39,792 weights, BatchNorm after every
conv, defined here) are measured. Each file is written in the default format (version 2: deflated
header without derived keys) and, side by side, in format version 1 (the whole header as metadata
text), so the header columns compare the two on the same masks.

    python benchmarks/sizes.py
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import _harness as h
import torch

import pemn_compress as pemn
from pemn_compress.fileformat.summary import summarize

CASES = [  # (strategy, ratio, density, dense_dtype, fold_batchnorm)
    ("onelayer", None, 0.5, "float32", False),
    ("onelayer", None, 0.5, "float16", False),
    ("onelayer", None, 0.5, "float16", True),
    ("rp", 1e-3, 0.5, "float16", True),
    ("onelayer", None, 0.3, "float16", True),
    ("onelayer", None, 0.1, "float16", True),
]


def user_small() -> torch.nn.Module:
    """A user's small CNN: 5 masked layers (4 convs, 1 linear; 39,792 weights) with BatchNorm."""
    from torch import nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16),
        nn.MaxPool2d(2),
        *block(16, 32),
        nn.MaxPool2d(2),
        *block(32, 48),
        *block(48, 48),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(48, 10),
    )


def _above(totals: dict) -> str:
    """How far the file is above its information bound, in percent."""
    return f"{100 * (totals['file_bytes'] / totals['bound_bytes'] - 1):.1f}%"


def build(name: str) -> torch.nn.Module:
    return user_small() if name == "user_small" else pemn.create_model(name)


def default_models() -> str:
    return ",".join([m for m in pemn.list_models() if not m.startswith("test_")] + ["user_small"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", default=default_models(), help="comma-separated (default: every zoo model + user_small)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = "python benchmarks/sizes.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    lines = [
        "# .pemn sizes against dense fp32 safetensors",
        "",
        f"Command: `{command.strip()}` ({h.today()})",
        "",
        "Bytes are real file sizes. *paper ratio*: 32 bits per masked weight over (1 bit per masked weight + 32 "
        "bits per unique value), BatchNorm and seed not counted. *above bound*: how much larger the file is than "
        "its information bound: the masks' n·H(kept/n) bits per layer, the dense leftovers at float16 with each "
        "BatchNorm as 2 values per channel, and the stored values (what `pemn inspect` calls the bound). "
        "*header*: every byte that is not mask, leftover or stored value (the safetensors header and, in "
        "version 2, the deflated PEMN header); *v1*: the same masks written with `format_version=1`.",
        "",
        "| model | strategy | density | leftovers | .pemn bytes | dense fp32 bytes | on-disk ratio | paper ratio "
        "| header bytes (v1) | header bytes | above bound (v1) | above bound |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for strategy, ratio, density, dtype, fold in CASES:
                torch.manual_seed(0)
                model = build(name)
                pemn.mask_(model, pemn.MaskConfig(strategy=strategy, ratio=ratio, density=density))
                totals = {}
                for version in (1, 2):
                    path = Path(tmp) / f"{name}.v{version}.pemn"
                    pemn.save(model, path, dense_dtype=dtype, fold_batchnorm=fold, format_version=version)
                    totals[version] = summarize(pemn.read_pemn(path), path)["totals"]
                t, v1 = totals[2], totals[1]
                label = ("fp32" if dtype == "float32" else "fp16") + (" + BN folded" if fold else "")
                method = strategy if ratio is None else f"{strategy} {ratio:g}"
                lines.append(
                    f"| {name} | {method} | {density} | {label} | {t['file_bytes']:,} | {t['dense_fp32_bytes']:,} | "
                    f"{t['disk_ratio']:.1f}x | {t['paper_ratio']:.1f}x | {v1['header_bytes']:,} | "
                    f"{t['header_bytes']:,} | {_above(v1)} | {_above(t)} |"
                )
                print(lines[-1], flush=True)
    h.write_text(Path(args.out) / "sizes.md", lines)


if __name__ == "__main__":
    main()
