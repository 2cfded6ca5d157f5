"""Determinism matrix: the SHA-256 of the materialized float32 weights of several files from the numpy
reader, the reference reader (formats/reference_reader.py), ``pemn.load`` (dense and masked form) with 1
and 2 torch threads, and processes started with ``spawn`` in parallel; each cell is compared with the
file's fingerprint. Used by tests/test_determinism.py and, through ``python -m support.workspace``, by
benchmarks/reliability.py.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
VALID = ROOT / "formats" / "vectors" / "valid"


def weights_digest(path: str, threads: int, masked: bool, skeleton: str | None, device: str = "cpu") -> str:
    """SHA-256 of the materialized weights (the fingerprint's definition) of ``pemn.load(path)``."""
    import torch

    import pemn_compress as pemn
    from pemn_compress.surgery import masked_layers

    torch.set_num_threads(threads)
    model = None
    if skeleton:
        model = load_script("formats/make_vectors.py", "pemn_make_vectors").SKELETONS[skeleton]()
    loaded = pemn.load(path, device=device, masked=masked, model=model)
    layers = dict(masked_layers(loaded)) if masked else None
    h = hashlib.sha256()
    for layer in loaded.pemn_file_header["layers"]:
        name = layer["name"]
        w = layers[name].materialized_weight() if masked else loaded.get_submodule(name).weight
        h.update(w.detach().cpu().contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def _worker(task: list) -> dict:
    """One spawned process: every file, dense and masked form, 1 thread."""
    return {f"{path}|{masked}": weights_digest(path, 1, masked, skeleton) for path, masked, skeleton in task}


def determinism_files(folder: Path) -> list[tuple[str, str | None, str]]:
    """(path, skeleton, label): three golden vectors (none with folded BatchNorm, so the masked form loads too)
    and two larger zoo models written here (rp rand with the largest seed and rice masks; onelayer)."""
    import torch

    import pemn_compress as pemn

    expected = json.loads((VALID / "expected.json").read_text())["vectors"]
    files = []
    for name in ("seq_rp_learned_signed.pemn", "cm_dense_rice_d10.pemn", "conv1d_fp16_overflow.pemn"):  # none folded
        files.append((str(VALID / name), expected[name]["load"].get("skeleton"), name))
    folder.mkdir(parents=True, exist_ok=True)
    for model_name, config in (
        ("convmixer_64_4", dict(strategy="rp", ratio=1e-3, rp_mode="rand", density=0.1, seed=2**63 - 1)),
        ("resnet20", dict(strategy="onelayer", density=0.5, seed=6, distribution="uniform")),
    ):
        path = folder / f"{model_name}_{config['strategy']}.pemn"
        if not path.exists():
            torch.manual_seed(0)
            pemn.save(pemn.mask_(pemn.create_model(model_name), pemn.MaskConfig(**config)), path)
        files.append((str(path), None, f"{path.name} (zoo, {sum(1 for _ in pemn.read_pemn(path).layers)} layers)"))
    return files


def determinism_matrix(folder: Path, processes: int = 3) -> dict:
    """Every column's digest per file; a cell is True when it equals the file's fingerprint."""
    import torch

    from pemn_compress.fileformat.reader import decode_weights, read_pemn, weights_fingerprint

    ref = load_script("formats/reference_reader.py", "pemn_reference_reader")
    files = determinism_files(folder)
    old = torch.get_num_threads()
    rows = []
    try:
        spawned: list[dict] = []
        task = [(path, masked, skeleton) for path, skeleton, _ in files for masked in (False, True)]
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes) as pool:
            spawned = pool.map(_worker, [task] * processes)
        for path, skeleton, label in files:
            pf = read_pemn(path)
            fingerprint = pf.header["fingerprint"]["value"]
            weights = decode_weights(pf)
            out = ref.read(path)
            cells = {
                "numpy reader": weights_fingerprint([weights[layer.name] for layer in pf.layers]),
                "reference reader": weights_fingerprint([out["weights"][layer.name] for layer in pf.layers]),
                "load, 1 thread": weights_digest(path, 1, False, skeleton),
                "load, 2 threads": weights_digest(path, 2, False, skeleton),
                "masked, 1 thread": weights_digest(path, 1, True, skeleton),
                "masked, 2 threads": weights_digest(path, 2, True, skeleton),
            }
            for i, result in enumerate(spawned):
                cells[f"process {i + 1} of {processes}"] = result[f"{path}|False"]
                cells[f"process {i + 1} masked"] = result[f"{path}|True"]
            same = {k: v == fingerprint for k, v in cells.items()}
            rows.append({"file": label, "fingerprint": fingerprint, "cells": same, "digests": cells})
    finally:
        torch.set_num_threads(old)
    return {"rows": rows, "ok": all(all(r["cells"].values()) for r in rows)}


