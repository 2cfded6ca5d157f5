"""How fast ``pemn.load`` is against loading the dense fp32 safetensors file of the same model.

For zoo models of increasing size, masked with each strategy, both files are written once, then
loaded alternately (``--repeats`` times, median reported) into the same architecture on the same
device:

* dense: ``create_model(...)`` + ``load_state_dict(safetensors.torch.load_file(path))``
* pemn:  ``pemn.load(path, device=...)`` (validation, checksums, mask decoding, bit-exact weight
  regeneration, fingerprint check, model construction)

Writes ``benchmarks/results/load_speed_<device>.{csv,md}`` and prints the ratios.

    python benchmarks/load_speed.py
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import pemn_compress as pemn
from pemn_compress.api import resolve_device
from pemn_compress.surgery import materialize

MODELS = [
    ("test_convmixer", {"in_chans": 1}),
    ("convmixer_64_4", {"in_chans": 1}),
    ("resnet20", {}),
    ("vit_tiny_6", {}),
    ("convmixer_256_6", {}),
    ("convmixer_256_8", {}),
    ("convmixer_512_8", {}),
]
STRATEGIES = [("onelayer", None), ("rp", 1e-3), ("mp", None), ("dense", None)]


def _timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    del out
    return elapsed


def bench_model(name, kwargs, strategy, ratio, device, repeats, folder: Path) -> dict:
    torch.manual_seed(0)
    model = pemn.create_model(name, **kwargs)
    pemn.mask_(model, pemn.MaskConfig(strategy=strategy, ratio=ratio))
    model.eval()
    pemn_path = folder / f"{name}_{strategy}.pemn"
    pemn.save(model, pemn_path)
    weights = model.pemn_plan.masked_weights
    dense = materialize(model)
    dense_path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(dense_path))

    def load_dense():
        m = pemn.create_model(name, **kwargs)
        m.load_state_dict(load_file(str(dense_path), device=str(device)))
        return m.to(device).eval()

    def load_pemn():
        return pemn.load(pemn_path, device=device)

    load_dense(), load_pemn()  # warm-up (imports, allocator)
    dense_times, pemn_times = [], []
    for _ in range(repeats):
        dense_times.append(_timed(load_dense, device))
        pemn_times.append(_timed(load_pemn, device))
    t_dense, t_pemn = statistics.median(dense_times), statistics.median(pemn_times)
    return {
        "model": name,
        "strategy": strategy if ratio is None else f"{strategy} {ratio:g}",
        "masked_weights": weights,
        "unique_values": model_unique(pemn_path),
        "pemn_bytes": os.path.getsize(pemn_path),
        "dense_bytes": os.path.getsize(dense_path),
        "dense_load_ms": 1000 * t_dense,
        "pemn_load_ms": 1000 * t_pemn,
        "ratio": t_pemn / t_dense,
        "weights_per_sec": weights / t_pemn,
    }


def model_unique(path) -> int:
    return pemn.read_pemn(path).plan.unique_values


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=",".join(m for m, _ in MODELS))
    parser.add_argument("--strategies", default="onelayer,rp,mp,dense")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    wanted = set(args.models.split(","))
    strategies = [s for s in STRATEGIES if s[0] in args.strategies.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in MODELS:
            if name not in wanted:
                continue
            for strategy, ratio in strategies:
                row = bench_model(name, kwargs, strategy, ratio, device, args.repeats, Path(tmp))
                rows.append(row)
                print(f"{row['model']:<16} {row['strategy']:<10} {row['masked_weights']:>9,} weights  "
                      f"dense {row['dense_load_ms']:7.1f} ms  pemn {row['pemn_load_ms']:7.1f} ms  "
                      f"ratio {row['ratio']:.2f}x  {row['weights_per_sec'] / 1e6:6.1f} M weights/s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"load_speed_{device.type}"
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    command = "python benchmarks/load_speed.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        f"# pemn.load vs dense fp32 safetensors load ({device.type})",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Median of {args.repeats} alternating loads each; torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), {datetime.date.today().isoformat()}. Both include building the "
        "architecture; pemn also validates, checks every checksum, decodes the masks, regenerates the weights "
        "bit-exactly and verifies their fingerprint. Target (DESIGN.md section 7): ratio <= 1.5.",
        "",
        "| model | strategy | masked weights | unique values | .pemn bytes | fp32 .safetensors bytes | dense load ms | pemn load ms | ratio | weights/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['strategy']} | {r['masked_weights']:,} | {r['unique_values']:,} | {r['pemn_bytes']:,} | "
                     f"{r['dense_bytes']:,} | {r['dense_load_ms']:.1f} | {r['pemn_load_ms']:.1f} | {r['ratio']:.2f} | "
                     f"{r['weights_per_sec'] / 1e6:.1f} M |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.csv and {stem}.md")


if __name__ == "__main__":
    main()
