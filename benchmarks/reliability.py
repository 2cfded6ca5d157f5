"""Reliability and security report: loader fuzzing, hostile files, fault injection, determinism.

    PYTHONPATH=. python benchmarks/reliability.py               # committed report: 100,000 fuzz cases
    PYTHONPATH=. python benchmarks/reliability.py --quick       # CI: 2,000 fuzz cases, one run per fault

Writes ``benchmarks/results/reliability.md`` (and ``reliability.json``), the command at the top:

1. **Fuzzing** (benchmarks/fuzz_loader.py): outcome classes of the package and of the reference
   reader, how deep the mutations got, ``pemn.load`` outcomes, reader disagreements, unexpected outcomes.
2. **Hostile files** (benchmarks/hostile_files.py writes them): what each reader, ``pemn.load`` and the CLI
   did, as ``python -m support.hostile`` (tests/support/hostile.py, the tests' own check) reports it.
3. **Fault injection** on ``pemn compress`` (test_mlp, 256 Fashion-MNIST images, 2 epochs, 1 thread):
   SIGKILL at random points after the first checkpoint, a full disk during the final save (and
   everywhere), Ctrl-C at a random step; each followed by ``--resume`` and compared byte for byte with
   an uninterrupted run.
4. **Determinism matrix**: the SHA-256 of the materialized weights of several files from the numpy
   reader, the reference reader, ``pemn.load`` (dense and masked form) with 1 and 2 torch threads, 3
   spawned processes in parallel, and a repeated ``pemn compress`` run. CUDA: scripts/gpu-check.sh.

Sections 3 and 4 are the scenarios of tests/test_faults.py and tests/test_determinism.py, run ``--repeats``
times as the command ``python -m support.workspace`` (tests/support/workspace.py); this script imports
nothing from tests/, it runs those commands and reads what they write.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

# What this campaign found and how each was fixed (the fuzz and fault runs above confirm the fixes).
FINDINGS = [
    ("fuzz_loader: pemn.load of a registry file whose architecture.kwargs holds 'name'",
     "TypeError: create_model() got multiple values for argument 'name' escaped pemn.load",
     "pemn_compress/models/_registry.py `create_model(name, /, **kwargs)`: name is positional-only, so a 'name' "
     "kwarg is refused like any unknown argument (ModelError)"),
    ("fuzz_loader: architecture.kwargs depth=2**31 (also 20,000) on test_convmixer",
     "pemn.load hung (> 30 s, growing memory) building millions of modules on the meta device",
     "pemn_compress/api.py `_probe_architecture`: the meta build runs under torch's global module/parameter/buffer "
     "registration hooks with a budget derived from the file's layer and dense tables (ModelError beyond it)"),
    ("fuzz_loader / hostile files: architecture.kwargs kernel_size or dim = 2**31",
     "RuntimeError 'Storage size calculation overflowed' escaped pemn.load (meta build)",
     "pemn_compress/api.py `_probe_architecture`: any non-PemnError while building the file's reference "
     "becomes ModelError('the file's architecture cannot be built: ...')"),
    ("fuzz_loader (100k run): dense.folded_batchnorm naming a module the model lacks ('0', '1')",
     "AttributeError from Module.get_submodule escaped pemn.load (_unfold_batchnorm)",
     "pemn_compress/api.py `_unfold_batchnorm`: a missing module or a non-string name is refused like a "
     "non-BatchNorm one (ModelError 'folded BatchNorm ... is not a BatchNorm module in the model')"),
    ("fault injection: SIGKILL of `pemn compress` inside a checkpoint write (about 1 kill in 6)",
     "a `.<output>.ckpt.XXXX.tmp` file stayed in the output folder for good (nothing ever removed it)",
     "pemn_compress/checkpoints.py `remove_stale_temp_files`: every run (fresh or --resume) first removes "
     "`.<output name>.*.tmp`, the temp files of its own output and checkpoint"),
    ("format v2: the reference reader and the fuzzer's single-fault checks (a header edit: layer bank = -1)",
     "the package accepted a layer whose stated bank was -1 (v1 and v2): -1 was its placeholder for a bank a v2 "
     "header leaves out, so the derived bank replaced it",
     "pemn_compress/fileformat/header.py: the placeholders are -(2**64) and NaN, which no JSON number a reader "
     "accepts can be; vector v2/invalid/layer_bank_minus_one and the fuzzer's bank = -1 edit pin it"),
]


def materialization_cost(weights: int = 1 << 20) -> dict:
    """Peak traced bytes per declared weight to read, decode and verify a one-layer file (dense raw; rp rand)."""
    import tracemalloc

    import torch
    from torch import nn

    import pemn_compress as pemn
    from pemn_compress.export import to_bytes
    from pemn_compress.fileformat.reader import decode_weights, read_pemn, verify_fingerprint

    out = {}
    configs = (("dense, raw", dict(strategy="dense")), ("rp rand", dict(strategy="rp", ratio=1e-3, rp_mode="rand")))
    for label, config in configs:
        torch.manual_seed(0)
        model = pemn.mask_(
            nn.Sequential(nn.Linear(1024, weights // 1024, bias=False)), pemn.MaskConfig(seed=1, **config)
        )
        blob = to_bytes(model)
        tracemalloc.start()
        try:
            pf = read_pemn(blob)
            verify_fingerprint(pf, decode_weights(pf))
            del pf
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        out[label] = peak / weights
    return out


# ---------------------------------------------------------------------------------------------- report
def _md_escape(text: str) -> str:
    from pemn_compress.cli import sanitize

    return sanitize(text).replace("|", "\\|")


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.items()) or "-"


def _summary(command: str, fuzz: dict, hostile: list[dict], campaign: dict, env: dict) -> list[str]:
    faults, matrix, repeat = campaign["faults"], campaign["determinism"], campaign["compress_repeat"]
    return [
        "# Reliability and security report",
        "",
        f"Generated by `{command}` ({env['date']}; {env['machine']}).",
        "",
        "## Summary",
        "",
        f"- Fuzzing: **{fuzz['cases']:,} cases** in {fuzz['seconds']:.0f} s "
        f"({fuzz['cases_per_second']:.0f} cases/s, one core); "
        f"**{fuzz['unexpected_total']} unexpected outcomes**; reader disagreements: accept/refuse "
        f"**{fuzz['accept_refuse_disagreements']}**, weight bits **{fuzz['bit_disagreements']}**, error class "
        f"{sum(fuzz['class_disagreements'].values())} (informational, see below).",
        f"- Hostile files: {len(hostile)}, handled as required: "
        f"**{sum(not r['problems'] for r in hostile)} / {len(hostile)}**; code executed: "
        f"**{sum(r['executed'] or bool(r['calls']) for r in hostile)}**.",
        f"- Fault injection: **{sum(r['ok'] for r in faults)} / {len(faults)}** runs survived "
        "with every check passing.",
        f"- Determinism: weights bit-identical in every column: **{'yes' if matrix['ok'] else 'NO'}**; repeated "
        f"`pemn compress` byte-identical: **{'yes' if repeat['identical'] else 'NO'}**. CUDA: not run here "
        "(no GPU); `scripts/gpu-check.sh` step 3 compares torch-on-CUDA bits with numpy.",
        "",
    ]


def _findings(hostile: list[dict], cost: dict) -> list[str]:
    lines = ["## Findings of this campaign (all fixed; the numbers above are with the fixes)", "",
             "| found by | symptom | fix |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in FINDINGS]
    worst = max(cost.values())
    lines += [
        "",
        "Residual limits (by design, not fixed here):",
        "",
        "- Spec section 12, row 17: rice lets a few bytes declare many weights, so an accepted file's decoding cost is "
        "bounded by the reader's `max_weights` (default 2**31), not by the file size. Measured here "
        "(peak traced memory per declared weight, read + decode + fingerprint): "
        + ", ".join(f"{k} {v:.0f} B" for k, v in cost.items())
        + f"; so a 2 KB file can legitimately ask the default reader for ~{worst * 2**31 / 1e9:.0f} GB. "
        "Code that loads untrusted files should pass a lower `max_weights=`.",
    ]
    heavy = next((r for r in hostile if r["name"] == "safetensors_100001_tensors"), None)
    if heavy is not None:
        rate = heavy["read_seconds"] / (heavy["bytes"] / 2**20)
        lines.append(
            f"- Header parsing is linear but slow in Python: the {heavy['bytes'] / 2**20:.1f} MiB header of "
            f"`safetensors_100001_tensors` took {heavy['read_seconds']:.1f} s to refuse "
            f"({rate:.2f} s/MiB, both readers alike), so a header at the 100 MiB cap "
            f"(`MAX_HEADER_BYTES`, safetensors' own) would cost ~{rate * 100:.0f} s of CPU "
            "before its LimitError. A real `.pemn` header is a few KiB.")
    lines += [
        "- When both readers refuse a file with several faults they may name different classes: the package checks "
        "`rice_k`'s range while decoding masks (spec row 23), the reference reader with the layer table (row 15); "
        "a file with exactly one fault gets the same class from both (formats/vectors/invalid pins them).",
        "",
    ]
    return lines


def _fuzz_outcomes(fuzz: dict) -> list[str]:
    lines = [
        "## 1. Fuzzing the loader",
        "",
        f"`benchmarks/fuzz_loader.py --cases {fuzz['cases']} --seed {fuzz['seed']}`: mutations of "
        f"{fuzz['seeds']} seeds, the valid vectors (format version 1) and each re-laid out as version 2 "
        f"(both readers with `max_weights={fuzz['max_weights']:,}`); "
        f"`pemn.load` on {sum(fuzz['load'].values()):,} of the cases; tracemalloc on {fuzz['memory_samples']:,} "
        f"(worst peak {100 * fuzz['memory_peak_ratio']:.1f}% of the bound "
        "`512 x file bytes + 64 x declared weights + 8 x declared version 2 header bytes + 4 MiB`); "
        f"slowest case {1e3 * fuzz['max_case_seconds']:.0f} ms (limit {fuzz['slow_limit_s']:.0f} s).",
        "",
        "| outcome | package | reference reader |",
        "|---|---:|---:|",
    ]
    for key in sorted(set(fuzz["package"]) | set(fuzz["reference"]), key=lambda k: (k != "accepted", k)):
        lines.append(f"| {key} | {fuzz['package'].get(key, 0):,} | {fuzz['reference'].get(key, 0):,} |")
    lines += ["", "How far the package got (where it refused, or accepted):", "", "| stage | cases |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in fuzz["stage"].items()]
    lines += ["", f"Cases per family: {_counts(fuzz['family'])}; "
              f"accepted per family: {_counts(fuzz['family_accepted'])} "
              "(`semantic` edits recompute the fingerprint, so most are valid files again and both readers' "
              "weight bits are compared; `bytes` edits are unsigned damage, and an accepted one must decode to "
              "the seed's content).",
              "", f"Mutators applied: {_counts(fuzz['mutators'])}.", "",
              f"Cases per seed format version: {_counts({f'v{k}': v for k, v in fuzz['versions'].items()})}; "
              f"accepted: {_counts({f'v{k}': v for k, v in fuzz['version_accepted'].items()})}; "
              f"left out of the reader cross-check (a reference reader without version 2): "
              f"{fuzz['reference_skipped']:,}.", "",
              f"One-fault cases checked against the outcome the spec gives them: {fuzz['expectations_checked']:,}; "
              f"mismatches: {_counts(fuzz['expectation_mismatches'])}.", "",
              f"`pemn.load` outcomes: {_counts(fuzz['load'])}.", ""]
    return lines


def _fuzz_problems(fuzz: dict) -> list[str]:
    lines = [f"Unexpected outcomes: {_counts(fuzz['unexpected'])} "
             f"(reference reader: {_counts(fuzz['reference_unexpected'])}).", ""]
    if fuzz["examples"]:
        lines += ["| case | seed | mutations | package | reference | problem |", "|---|---|---|---|---|---|"]
        for e in fuzz["examples"][:20]:
            problem = ", ".join(e.get("problems") or [e.get("disagreement") or ""])
            lines.append(f"| {e['case']} | {e['seed']} | {_md_escape(', '.join(e['mutations']))} | {e['package']} | "
                         f"{e['reference']} | {_md_escape(problem)} |")
        lines.append("")
    lines += [f"Error-class disagreements (both readers refuse, with different classes): "
              f"{_counts(fuzz['class_disagreements'])}. They come from files with several faults at once, "
              "which the two readers meet in a different order "
              "(the spec pins the class only for a file with exactly one fault); for example:", ""]
    for e in fuzz["class_examples"][:5]:
        lines.append(f"- case {e['case']} ({e['seed']}, {_md_escape(', '.join(e['mutations']))}): package "
                     f"{_md_escape(e['package'][:150])}; reference {_md_escape(e['reference'][:150])}")
    return lines


def _hostile(hostile: list[dict]) -> list[str]:
    lines = ["", "## 2. Hostile files", "",
             "Each file was given to `read_pemn` + `decode_weights` + fingerprint check, the reference reader, "
             "`pemn.load` (no `trust_code`), `pemn inspect` and `pemn verify`, with `os.system`, `subprocess` and the "
             "loader's `importlib.import_module` watched and a module planted next to the file that leaves a marker "
             "if imported.", "",
             "| file | group | what it is | readers | pemn.load | refusal message "
             "| CLI (inspect/verify exit, raw ESC) | result |",
             "|---|---|---|---|---|---|---|---|"]
    for r in hostile:
        msg = r["messages"]["read"] or r["messages"]["load"]
        if r["cli"]:
            cli = ", ".join(f"{k} {v['exit']}" for k, v in r["cli"].items())
            cli += ", RAW ESC" if any(v["raw_esc"] for v in r["cli"].values()) else ", no ESC"
        else:
            cli = "not run (large file)"
        readers = r["read"] if r["read"] == r["reference"] else f"{r['read']} / ref {r['reference']}"
        result = "ok" if not r["problems"] else _md_escape("; ".join(r["problems"]))
        lines.append(f"| {r['name']} | {r['group']} | {_md_escape(r['description'])} | {readers} | {r['load']} | "
                     f"{_md_escape(msg[:110])} | {cli} | {result} |")
    return lines


def _fault_row(r: dict) -> str:
    if r["scenario"] == "sigkill":
        what = (f"SIGKILL {r['delay_s']:.2f} s after the first checkpoint" if r["killed"] else
                f"finished before the kill ({r['delay_s']:.2f} s)") + (
            f"; output after kill: {r['output_after_kill']}; checkpoint step {r['checkpoint_step']}"
            + (f"; temp left by the kill: {len(r['temp_files_after_kill'])} (removed by the resume)"
               if r["temp_files_after_kill"] else ""))
    elif r["scenario"].startswith("ctrl-c"):
        what = f"interrupted after step {r['step']}, resumed"
    else:
        what = _md_escape(r["error"][:120])
    failed = "; ".join(f"{c['check']}: {_md_escape(c['detail'][:80])}" for c in r["checks"] if not c["ok"])
    passed = f"{sum(c['ok'] for c in r['checks'])}/{len(r['checks'])}"
    return f"| {r['scenario']} | {r['run']} | {what} | {passed} | {failed or '-'} |"


def _faults_and_determinism(campaign: dict) -> list[str]:
    faults, matrix, repeat = campaign["faults"], campaign["determinism"], campaign["compress_repeat"]
    lines = ["", "## 3. Fault injection on `pemn compress`", "",
             f"`pemn compress {' '.join(campaign['compress_args'])}` ({campaign['total_steps']} optimizer steps); "
             f"uninterrupted output {len(faults) and repeat['bytes']:,} bytes, SHA-256 `{repeat['first'][:16]}...`.",
             "", "| scenario | run | what happened | checks passed | failed checks |", "|---|---:|---|---:|---|"]
    lines += [_fault_row(r) for r in faults]
    lines += ["", "Checks of every run: the output path holds nothing, the previous file or the complete file (never a "
              "partial one); the checkpoint loads with `torch.load(weights_only=True)`; `--resume` exits 0 with bytes "
              "identical to the uninterrupted run and removes the checkpoint; no `atomic_write` temp file remains; "
              "errors are one `error:` line with exit 2, interruptions one line with exit 130.", "",
              "## 4. Determinism matrix", "",
              "Each cell: the SHA-256 of the materialized float32 weights (layer order, little-endian) equals "
              "the file's fingerprint. Spawned processes ran in parallel (multiprocessing `spawn`), 1 thread each.", ""]
    columns = list(matrix["rows"][0]["cells"]) if matrix["rows"] else []
    lines += ["| file | " + " | ".join(columns) + " | CUDA |", "|---|" + "---|" * (len(columns) + 1)]
    for row in matrix["rows"]:
        lines.append(f"| {row['file']} | " + " | ".join("same" if v else "**DIFFERENT**" for v in row["cells"].values())
                     + " | not run (no GPU; scripts/gpu-check.sh) |")
    lines += ["", f"`pemn compress` repeated with the same seed (this process, then a fresh interpreter): "
              f"{'identical bytes' if repeat['identical'] else 'DIFFERENT bytes'} (`{repeat['first'][:16]}` / "
              f"`{repeat['second'][:16]}`).", ""]
    return lines


def render(command: str, fuzz: dict, hostile: list[dict], campaign: dict, env: dict, cost: dict) -> str:
    """The report: ``campaign`` is what ``python -m support.workspace`` wrote (faults, determinism, repeat)."""
    lines = _summary(command, fuzz, hostile, campaign, env) + _findings(hostile, cost)
    lines += _fuzz_outcomes(fuzz) + _fuzz_problems(fuzz) + _hostile(hostile) + _faults_and_determinism(campaign)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the campaign
def _test_support(module: str, *args) -> dict:
    """``python -m support.<module> ARGS --json FILE`` (tests/support), run as a command; what it wrote."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    with tempfile.TemporaryDirectory(prefix="pemn-reliability-") as tmp:
        out = Path(tmp) / "out.json"
        subprocess.run([sys.executable, "-m", f"support.{module}", *map(str, args), "--json", str(out)], cwd=ROOT,
                       env=env, check=False, timeout=6 * 3600)
        if not out.exists():
            raise RuntimeError(f"python -m support.{module} wrote nothing (see its output above)")
        return json.loads(out.read_text())


def run_fuzz(cases: int, seed: int, crash_dir: Path) -> tuple[dict, bool]:
    """The fuzz section's numbers, and whether the fuzzer found nothing wrong."""
    import fuzz_loader

    print(f"fuzzing {cases:,} cases ...", file=sys.stderr, flush=True)
    stats = fuzz_loader.run_fuzz(cases, seed, crash_dir=crash_dir, progress=True)
    print(fuzz_loader.format_summary(stats), file=sys.stderr, flush=True)
    fuzz = {**stats.to_dict(), "seed": seed, "seeds": len(fuzz_loader.load_seeds()),
            "max_weights": fuzz_loader.DEFAULT_MAX_WEIGHTS, "slow_limit_s": fuzz_loader.SLOW_SECONDS}
    clean = not (stats.unexpected or stats.accept_refuse_disagreements or stats.bit_disagreements
                 or stats.expectation_mismatches)
    return fuzz, clean


def run_hostile(folder: Path) -> list[dict]:
    """Every hostile file written to ``folder``, then checked by ``python -m support.hostile``."""
    import hostile_files

    print("hostile files ...", file=sys.stderr, flush=True)
    hostile_files.write_corpus(folder)
    return _test_support("hostile", folder)


def _command(args) -> str:
    command = "PYTHONPATH=. python benchmarks/reliability.py"
    command += " --quick" if args.quick else ""
    command += f" --cases {args.cases}" if args.cases is not None else ""
    command += f" --repeats {args.repeats}" if args.repeats else ""
    command += f" --seed {args.seed}" if args.seed else ""
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None, help="fuzz cases (default 100000; --quick: 2000)")
    parser.add_argument("--quick", action="store_true", help="CI budget: 2,000 fuzz cases, one run per fault scenario")
    parser.add_argument("--repeats", type=int, default=None, help="runs per fault scenario (default 3; --quick: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "reliability.md")
    parser.add_argument("--crash-dir", type=Path, default=None,
                        help="inputs of unexpected fuzz outcomes (default: a temp folder)")
    args = parser.parse_args(argv)
    cases = args.cases if args.cases is not None else (2000 if args.quick else 100_000)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    command = _command(args)

    import torch

    torch.set_num_threads(1)
    machine = (
        f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
    )
    env = {"date": datetime.date.today().isoformat(), "machine": machine}
    with tempfile.TemporaryDirectory(prefix="pemn-reliability-") as tmp:
        tmp = Path(tmp)
        fuzz, fuzz_clean = run_fuzz(cases, args.seed, args.crash_dir or tmp / "crashes")
        hostile = run_hostile(tmp / "hostile")
        print("fault injection and determinism ...", file=sys.stderr, flush=True)
        campaign = _test_support("workspace", "--repeats", repeats, "--seed", args.seed)
        cost = materialization_cost()
    text = render(command, fuzz, hostile, campaign, env, cost)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"command": command, "env": env, "fuzz": fuzz, "hostile": hostile, "faults": campaign["faults"],
         "determinism": campaign["determinism"], "compress_repeat": campaign["compress_repeat"],
         "materialization_bytes_per_weight": cost}, indent=1, default=str))
    ok = (fuzz_clean and not any(r["problems"] for r in hostile) and all(r["ok"] for r in campaign["faults"])
          and campaign["determinism"]["ok"] and campaign["compress_repeat"]["identical"])
    print(f"wrote {args.out} ({'all checks passed' if ok else 'FAILURES: see the report'})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
