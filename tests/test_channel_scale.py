"""benchmarks/channel_scale.py run as a user types it, in its quick mode on real Fashion-MNIST images: each
variant's learned scales are as many as counted here from the model (one per output channel, or one per
masked layer), they trained, and the report's paired differences are those of its raw CSV; --resume
keeps what ran."""

from __future__ import annotations

import re
import statistics

import pytest
from conftest import read_csv, run_script

import pemn_compress as pemn

NAME = "channel_scale_quick_fashion-mnist_test_convmixer_cpu"


def test_quick_report_pairs_the_seeds(tmp_path):
    args = ["--quick", "--out", tmp_path, "--seeds", "0,1"]
    run_script("benchmarks/channel_scale.py", *args)
    md = tmp_path / f"{NAME}.md"
    rows = read_csv(md.with_suffix(".csv"))
    acc = {(r["variant"], int(r["seed"])): 100 * float(r["accuracy"]) for r in rows}
    assert len(rows) == 6 and len(acc) == 6
    # test_convmixer's masked layers: stem, then depthwise and pointwise convs, then the head
    model = pemn.mask_(pemn.create_model("test_convmixer"), pemn.MaskConfig())
    layers = [layer for _, layer in pemn.masked_layers(model)]
    count = {"masks only": 0, "masks + per-channel scale": sum(layer.source.shape[0] for layer in layers),
             "masks + per-layer scale": len(layers)}  # fmt: skip
    for r in rows:
        assert int(r["scale_params"]) == count[r["variant"]]
        assert (float(r["scale_moved"]) > 0) == (r["variant"] != "masks only")  # the scales trained
    text = md.read_text().splitlines()
    for variant in ("masks + per-channel scale", "masks + per-layer scale"):
        deltas = [acc[(variant, s)] - acc[("masks only", s)] for s in (0, 1)]
        line = next(x for x in text if x.startswith(f"- {variant} against masks only:"))
        found = float(re.search(r": ([+-]\d+\.\d+) ±", line).group(1))
        assert found == pytest.approx(statistics.fmean(deltas), abs=0.006)
        assert [float(x) for x in re.findall(r"s\d ([+-]\d+\.\d+)", line)] == pytest.approx(deltas, abs=0.006)
    run_script("benchmarks/channel_scale.py", *args, "--resume")  # keeps what ran and adds nothing
    assert read_csv(md.with_suffix(".csv")) == rows
