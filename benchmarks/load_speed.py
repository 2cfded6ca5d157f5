"""How fast ``pemn.load`` is against loading the dense fp32 safetensors file of the same model.

User-built models (not in the zoo: ``linear_stack``, ``depth`` x (``Linear(width, width)`` +
``LayerNorm``) then ``Linear(width, 10)``) from about 1M to 150M+ parameters are masked (onelayer,
density 0.5), written once as `.pemn` and as a dense fp32 ``.safetensors`` file, then loaded
alternately, each load in a FRESH process (``--repeats`` times, median reported):

* dense: build the skeleton (``linear_stack``) + ``load_state_dict(safetensors.torch.load_file(path))``
  + ``.to(device)``
* pemn:  build the skeleton + ``pemn.load(path, model=skeleton, device=...)`` (validation, checksums,
  mask checks, bit-exact weight regeneration streamed into the skeleton, fingerprint check)

Each child times from before building the skeleton to the loaded model (after a device
synchronization), and measures the peak memory added: ``VmHWM`` (reset through
``/proc/self/clear_refs``) minus ``VmRSS`` just before, both from ``/proc/self/status``. Imports are
not timed. CUDA rows are added when a GPU is present. A second table compares the CPU generator
kernels (numpy fused on 1 and on all worker threads, torch integer ops) in M values/s.

Writes ``benchmarks/results/load_speed_<device>.{csv,md}`` (``cpu`` or ``cuda``: the device of the
last rows) and prints every row.

    python benchmarks/load_speed.py                       # the committed run (a few minutes on 2 cores)
    python benchmarks/load_speed.py --sizes 1m --repeats 1 --out /tmp/ls   # a smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/load_speed.py` from a checkout: this checkout's package
    sys.path.insert(0, str(ROOT))

import _harness as h  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

SIZES = {  # name: (width, depth) -> parameters
    "1m": (512, 4),  # 1.06M
    "10m": (1600, 4),  # 10.3M
    "67m": (4096, 4),  # 67.2M (the model)
    "151m": (4096, 9),  # 151M
}
TARGETS = {"ratio": 1.5, "weights_per_sec": 300e6, "memory": 1.2}


def linear_stack(width: int, depth: int, classes: int = 10) -> nn.Sequential:
    """The user model: ``depth`` x (Linear(width, width), LayerNorm(width)), then Linear(width, classes)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.LayerNorm(width)]
    return nn.Sequential(*layers, nn.Linear(width, classes))


# ----------------------------------------------------------------------------------- child
def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(kind: str, path: str, width: int, depth: int, device: str) -> dict:
    """One load in this (fresh) process: seconds and peak bytes added."""
    from safetensors.torch import load_file

    import pemn_compress as pemn

    load = pemn.load  # the package imports lazily: resolve (import) it outside the timing, like the imports above
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.zeros(1, device=dev)  # CUDA context outside the timing, like the imports
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    rss0 = _status("VmRSS")
    t0 = time.perf_counter()
    skeleton = linear_stack(width, depth)
    if kind == "pemn":
        model = load(path, device=dev, model=skeleton)
    else:
        skeleton.load_state_dict(load_file(path, device="cpu"))
        model = skeleton.to(dev).eval()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    del model
    return {"seconds": seconds, "peak_added": _status("VmHWM") - rss0}


def _run_child(kind, path, width, depth, device) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, path, str(width), str(depth), device],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- parent
def write_files(name: str, folder: Path) -> tuple[Path, Path, int, int]:
    from safetensors.torch import save_file

    import pemn_compress as pemn

    width, depth = SIZES[name]
    torch.manual_seed(0)
    model = pemn.mask_(linear_stack(width, depth), pemn.MaskConfig(strategy="onelayer", density=0.5, seed=1))
    pemn_path = folder / f"stack_{name}.pemn"
    pemn.save(model, pemn_path)
    masked = model.pemn_plan.masked_weights
    del model
    dense = pemn.load(pemn_path, device="cpu", model=linear_stack(width, depth))
    params = sum(p.numel() for p in dense.parameters())
    dense_path = folder / f"stack_{name}.safetensors"
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(dense_path))
    return pemn_path, dense_path, masked, params


def bench_size(name: str, device: str, repeats: int, folder: Path) -> dict:
    width, depth = SIZES[name]
    pemn_path, dense_path, masked, params = write_files(name, folder)
    runs: dict[str, list[dict]] = {"dense": [], "pemn": []}
    for r in range(repeats):  # alternated, each in a fresh process
        for kind in ("dense", "pemn") if r % 2 == 0 else ("pemn", "dense"):
            path = dense_path if kind == "dense" else pemn_path
            runs[kind].append(_run_child(kind, str(path), width, depth, device))
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    peak = {k: statistics.median(x["peak_added"] for x in v) for k, v in runs.items()}
    fp32 = 4 * params
    return {
        "model": f"linear_stack {width}x{depth}",
        "device": device,
        "params": params,
        "masked_weights": masked,
        "pemn_bytes": os.path.getsize(pemn_path),
        "dense_bytes": os.path.getsize(dense_path),
        "dense_load_ms": 1000 * med["dense"],
        "pemn_load_ms": 1000 * med["pemn"],
        "ratio": med["pemn"] / med["dense"],
        "weights_per_sec": masked / med["pemn"],
        "dense_peak_added_mb": peak["dense"] / 2**20,
        "pemn_peak_added_mb": peak["pemn"] / 2**20,
        "pemn_peak_vs_fp32": peak["pemn"] / fp32,
        "dense_peak_vs_fp32": peak["dense"] / fp32,
    }


def bench_generator(count: int = 1 << 23) -> list[dict]:
    """M unit values/s of the CPU kernels (best of 3, one stream of ``count`` normal values)."""
    from pemn_compress import _parallel, rng

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return count / min(times)

    rows = []
    saved = os.environ.get("PEMN_THREADS")
    try:
        for threads in sorted({1, _parallel.workers()}):
            os.environ["PEMN_THREADS"] = str(threads)
            rows.append(
                {
                    "kernel": "numpy fused",
                    "threads": threads,
                    "values_per_sec": best(lambda: rng.unit_values(5, 0, count)),
                }
            )
    finally:
        os.environ.pop("PEMN_THREADS", None) if saved is None else os.environ.__setitem__("PEMN_THREADS", saved)
    for threads in sorted({1, torch.get_num_threads()}):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        rows.append(
            {
                "kernel": "torch int64",
                "threads": threads,
                "values_per_sec": best(lambda: rng.unit_values(5, 0, count, kernel="torch")),
            }
        )
        torch.set_num_threads(old)
    return rows


def _verdict(value: float, target: float, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value <= target
    return "met" if met else f"missed by {abs(value / target - 1) * 100:.0f}%"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in args.devices.split(","):
            for name in args.sizes.split(","):
                row = bench_size(name, device, args.repeats, Path(tmp))
                rows.append(row)
                print(
                    f"{row['model']:<22} {row['device']:<4} {row['params']:>11,} params  "
                    f"dense {row['dense_load_ms']:7.0f} ms  "
                    f"pemn {row['pemn_load_ms']:7.0f} ms  ratio {row['ratio']:.2f}x  "
                    f"{row['weights_per_sec'] / 1e6:6.1f} M weights/s  "
                    f"peak added pemn {row['pemn_peak_vs_fp32']:.2f}x / dense {row['dense_peak_vs_fp32']:.2f}x fp32",
                    flush=True,
                )
    generator = bench_generator()
    for g in generator:
        print(f"generator {g['kernel']:<12} {g['threads']} thread(s): {g['values_per_sec'] / 1e6:6.1f} M values/s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"load_speed_{rows[-1]['device'].split(':')[0]}"
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    command = "python benchmarks/load_speed.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    from pemn_compress import _parallel

    lines = [
        f"# pemn.load vs dense fp32 safetensors load ({', '.join(sorted({r['device'] for r in rows}))})",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Median of {args.repeats} alternated loads each, every load in a fresh process; {h.environment()}, "
        f"{os.cpu_count()} CPU(s), {_parallel.workers()} pemn worker thread(s), {h.today()}. "
        "Both build the same user model (`linear_stack`, default init) and "
        "load into it; pemn also validates, checks every checksum and mask, regenerates the weights bit-exactly "
        "and verifies their fingerprint. Peak added: VmHWM minus VmRSS before building, relative to the fp32 bytes "
        f"of all parameters. Targets: ratio <= {TARGETS['ratio']}, >= {TARGETS['weights_per_sec'] / 1e6:.0f} M "
        f"weights/s, pemn peak added <= {TARGETS['memory']}x.",
        "",
        "| model | device | params | .pemn bytes | fp32 .safetensors bytes | dense load ms | pemn load ms "
        "| ratio | weights/s | "
        "peak added dense | peak added pemn | ratio target | weights/s target | memory target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['device']} | {r['params']:,} | {r['pemn_bytes']:,} | {r['dense_bytes']:,} | "
            f"{r['dense_load_ms']:.0f} | {r['pemn_load_ms']:.0f} | {r['ratio']:.2f} | "
            f"{r['weights_per_sec'] / 1e6:.0f} M | "
            f"{r['dense_peak_added_mb']:.0f} MB ({r['dense_peak_vs_fp32']:.2f}x) | {r['pemn_peak_added_mb']:.0f} MB "
            f"({r['pemn_peak_vs_fp32']:.2f}x) | {_verdict(r['ratio'], TARGETS['ratio'], False)} | "
            f"{_verdict(r['weights_per_sec'], TARGETS['weights_per_sec'], True)} | "
            f"{_verdict(r['pemn_peak_vs_fp32'], TARGETS['memory'], False)} |"
        )
    lines += [
        "",
        "Generator kernels on this CPU (normal values, one stream of 8M, best of 3):",
        "",
        "| kernel | threads | M values/s |",
        "|---|---:|---:|",
    ]
    lines += [f"| {g['kernel']} | {g['threads']} | {g['values_per_sec'] / 1e6:.1f} |" for g in generator]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.csv and {stem}.md")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, path, width, depth, device = sys.argv[2:7]
        print(json.dumps(child(kind, path, int(width), int(depth), device)))
    else:
        main()
