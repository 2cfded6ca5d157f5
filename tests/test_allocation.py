"""ERK allocation (pemn_compress.allocation, ``--allocation erk``): by hand, against the byte bound and the
encoder, and in real compress runs on Fashion-MNIST images (the CLI, the callback it replaces, --resume)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import run_compress, trained_tensors
from support.faults import InterruptAfterSteps

import pemn_compress as pemn
from pemn_compress import allocation
from pemn_compress.budget import budget_bytes, mask_bytes_bound
from pemn_compress.errors import ConfigError
from pemn_compress.nn.topk import kept_count
from pemn_compress.pipeline import CompressOptions, TrainingInterrupted, compress
from pemn_compress.train import Callback, _unwrap

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONVMIXER = ((192, 1, 4, 4), *(((192, 1, 5, 5), (192, 192, 1, 1)) * 6), (10, 192))  # convmixer_192_6_p4's layers


def test_erk_by_hand():
    # a mask of 8 weights is stored raw in one byte whatever it keeps (spec section 7): at the same bytes ERK
    # keeps each layer's cap, half its weights, where a uniform density of 0.1 keeps one
    assert [mask_bytes_bound(8, k) for k in range(1, 8)] == [1] * 7
    assert allocation.erk_kept(((2, 4), (8, 1)), 0.1) == (4, 4)
    # at 0.5 and above every layer keeps the uniform fraction (where annealing starts)
    assert allocation.erk_kept(((2, 4), (300, 100)), 0.6) == (5, 18000)


def test_erk_spends_the_uniform_bytes_on_more_weights_small_layers_denser():
    sizes = [math.prod(s) for s in CONVMIXER]
    for density in (0.0265, 0.0887, 0.2):
        kept = allocation.erk_kept(CONVMIXER, density)
        uniform = [kept_count(density, n) for n in sizes]
        spent = sum(mask_bytes_bound(n, k) for n, k in zip(sizes, kept, strict=True))
        assert spent <= sum(mask_bytes_bound(n, k) for n, k in zip(sizes, uniform, strict=True))
        assert sum(kept) > sum(uniform)
        fraction = {s: k / n for s, k, n in zip(CONVMIXER, kept, sizes, strict=True)}
        # Erdős–Rényi-kernel: fraction proportional to sum(shape) / prod(shape), up to rounding and the 0.5 cap
        depthwise, pointwise = fraction[(192, 1, 5, 5)], fraction[(192, 192, 1, 1)]
        assert pointwise < density < depthwise
        if depthwise < 0.5:
            assert depthwise / pointwise == pytest.approx((203 / 4800) / (386 / 36864), rel=0.02)
        assert all(f <= 0.5 for f in fraction.values())


# 256 images in batches of 32 for 2 epochs; test_mlp's layers: Linear(784, 32) and Linear(32, 10)
OPTIONS = dict(model="test_mlp", max_train_samples=256, epochs=2, batch_size=32, threads=1, target_ratio=40.0)
FLAGS = ["test_mlp", "--max-train-samples", "256", "--epochs", "2", "--batch-size", "32", "--threads", "1",
         "--target-ratio", "40"]  # fmt: skip


def _ones(path) -> list[int]:
    return [int(m.sum()) for m in pemn.fileformat.reader.decode_masks(pemn.read_pemn(path)).values()]


def test_the_cli_writes_an_erk_file_within_the_same_budget(fmnist_cwd):
    erk = json.loads(run_compress(*FLAGS, "--allocation", "erk", "-o", "erk.pemn", "--json").stdout)
    uniform = json.loads(run_compress(*FLAGS, "--allocation", "uniform", "-o", "uniform.pemn", "--json").stdout)
    assert (erk["allocation"], uniform["allocation"]) == ("erk", "uniform")
    budget = budget_bytes(target_size=None, target_ratio=40.0, dense_fp32_bytes=erk["dense_fp32_bytes"])
    for name in ("erk.pemn", "uniform.pemn"):
        assert (fmnist_cwd / name).stat().st_size <= budget
        assert pemn.read_pemn(fmnist_cwd / name).header["provenance"]["recipe"]["allocation"] == name[:-5]
    density = erk["target"]["density"]
    assert uniform["target"]["density"] == density  # the same density chosen: only its spread differs
    assert _ones(fmnist_cwd / "uniform.pemn") == [kept_count(density, 784 * 32), kept_count(density, 320)]
    big, small = _ones(fmnist_cwd / "erk.pemn")
    assert small / 320 > density > big / (784 * 32) and big + small > sum(_ones(fmnist_cwd / "uniform.pemn"))
    model = pemn.load(fmnist_cwd / "erk.pemn", device="cpu")  # an ordinary file for any reader
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


class _ErkAtStart(Callback):
    """ERK installed when training starts, the way the full-data report's first ERK run had it."""

    def on_fit_start(self, trainer) -> None:
        allocation.allocate_(_unwrap(trainer.model))


def test_the_option_trains_what_the_callback_did_and_resumes_exactly(fmnist_cwd):
    compress(CompressOptions(**OPTIONS, allocation="erk", output="option.pemn"))
    compress(CompressOptions(**OPTIONS, allocation="uniform", output="callback.pemn"), callbacks=[_ErkAtStart()])
    option, callback = trained_tensors(fmnist_cwd / "option.pemn"), trained_tensors(fmnist_cwd / "callback.pemn")
    assert option.keys() == callback.keys() and all(np.array_equal(option[k], callback[k]) for k in option)
    with pytest.raises(TrainingInterrupted):
        compress(CompressOptions(**OPTIONS, allocation="erk", output="cut.pemn", checkpoint_every=0),
                 callbacks=[InterruptAfterSteps(5)])  # fmt: skip
    compress(CompressOptions(**OPTIONS, allocation="erk", output="cut.pemn", resume=True))
    assert (fmnist_cwd / "cut.pemn").read_bytes() == (fmnist_cwd / "option.pemn").read_bytes()


def test_a_bad_allocation_is_refused_by_name(fmnist_cwd):
    result = run_compress("test_mlp", "--allocation", "global", expect=2)
    assert "--allocation" in result.stderr and "'global' is not one of" in result.stderr
    with pytest.raises(ConfigError, match="allocation"):
        CompressOptions(model="test_mlp", allocation="global")
