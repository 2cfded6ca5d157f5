"""Changing a masked model's density (pemn_compress.surgery.set_model_density_): every layer the same
fraction by default, a lower density keeping a subset of what a higher one kept; and a model whose
allocator spreads the density unevenly keeps that allocation through density annealing and the budget
fit of ``compress`` (the file's kept counts checked against counts computed by hand here)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pemn_compress as pemn
from pemn_compress.config import DEFAULT_DENSITY, MaskConfig
from pemn_compress.errors import ConfigError, ModelError
from pemn_compress.fileformat.deflate import deflate
from pemn_compress.fileformat.header import canonical_json
from pemn_compress.interrupt import TrainingFailed
from pemn_compress.pipeline import CompressOptions, compress
from pemn_compress.surgery import ALLOCATOR, config_of, masked_layers, set_density_, set_model_density_
from pemn_compress.train import Callback

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def spec_count(density: float, n: int) -> int:
    """formats/pemn-v2.md: a layer of n weights keeps max(1, floor(density * n + 0.5)), at most n."""
    return min(n, max(1, math.floor(density * n + 0.5)))


def test_a_lower_density_keeps_a_subset_in_every_layer():
    torch.manual_seed(0)
    model = pemn.mask_(pemn.create_model("test_convmixer"), MaskConfig(density=0.5))
    wide = {name: layer.mask().clone() for name, layer in masked_layers(model)}
    for density in (0.3, 0.1, 0.02):
        assert set_model_density_(model, density) is model
        assert config_of(model).density == density
        for name, layer in masked_layers(model):
            mask = layer.mask()
            assert int(mask.sum()) == spec_count(density, mask.numel()), name
            assert not (mask & ~wide[name]).any(), name  # nothing kept that the wider one dropped
            wide[name] = mask
    with pytest.raises(ConfigError, match="density"):
        set_model_density_(model, 0.0)
    with pytest.raises(ModelError):
        set_model_density_(nn.Sequential(nn.Linear(2, 2)), 0.5)


def first_layer_full(model: nn.Module, density: float) -> nn.Module:
    """An uneven allocation: the first masked layer keeps every weight, the others the density."""
    set_density_(model, density)
    first = next(layer for _, layer in masked_layers(model))
    first.kept = math.prod(first.source.shape)
    first.density = 1.0
    return model


def test_an_allocated_model_is_reallocated_by_its_allocator():
    model = pemn.mask_(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 8)), MaskConfig(density=0.5))
    object.__setattr__(model, ALLOCATOR, first_layer_full)
    set_model_density_(model, 0.25)
    assert [layer.kept for _, layer in masked_layers(model)] == [20, 10]  # 40 x 0.25 = 10
    assert config_of(model).density == 0.25


class Allocated(Callback):
    """Gives the trained model the ``first_layer_full`` allocation before the first step."""

    def on_fit_start(self, trainer) -> None:
        first_layer_full(trainer.model, config_of(trainer.model).density)
        object.__setattr__(trainer.model, ALLOCATOR, first_layer_full)


# 256 images in batches of 64 for 1 epoch: 4 optimizer steps
OPTIONS = dict(model="test_convmixer", max_train_samples=256, epochs=1, batch_size=64, threads=1)


def kept(path) -> list[int]:
    return [layer.kept for layer in pemn.read_pemn(path).layers]


def expected(path, density: float) -> list[int]:
    numel = [layer.numel for layer in pemn.read_pemn(path).layers]
    return [numel[0]] + [spec_count(density, n) for n in numel[1:]]


def test_annealing_keeps_the_allocation(fmnist_cwd):
    compress(CompressOptions(**OPTIONS, density=0.1, density_schedule="anneal", output="a.pemn"),
             callbacks=[Allocated()])  # fmt: skip
    assert kept("a.pemn") == expected("a.pemn", 0.1)
    assert pemn.read_pemn("a.pemn").header["config"]["density"] == 0.1


def recipe_bytes(path) -> int:
    """What leaving the provenance's recipe out saves of a v2 file: its `header` tensor is the raw DEFLATE
    of the canonical header JSON (formats/pemn-v2.md section 3), so the difference of the two deflated texts."""
    header = pemn.read_pemn(path).header
    without = {**header, "provenance": {k: v for k, v in header["provenance"].items() if k != "recipe"}}
    return len(deflate(canonical_json(header).encode())) - len(deflate(canonical_json(without).encode()))


def test_the_budget_fit_keeps_the_allocation(fmnist_cwd, monkeypatch):
    # an estimate of the deflated header 1,500 B too optimistic: the density chosen (the default) is too high
    monkeypatch.setattr("pemn_compress.budget.header_margin", lambda deflated: -1500)
    compress(CompressOptions(**OPTIONS, output="free.pemn"), callbacks=[Allocated()])
    # over by 40 B even without the recipe, whatever the recipe's size: the density must go
    budget = (fmnist_cwd / "free.pemn").stat().st_size - recipe_bytes("free.pemn") - 40
    compress(CompressOptions(**OPTIONS, output="fit.pemn", target_size=budget), callbacks=[Allocated()])
    assert (fmnist_cwd / "fit.pemn").stat().st_size <= budget
    final = pemn.read_pemn("fit.pemn").header["config"]["density"]
    assert final < DEFAULT_DENSITY
    assert kept("fit.pemn") == expected("fit.pemn", final)


def test_a_budget_no_density_meets_says_why(fmnist_cwd, monkeypatch):
    # the header estimate 1,500 B too optimistic and a budget under even one kept weight per layer: the error
    # blames the header, not a float16 overflow (every leftover of this model is in float16's range)
    monkeypatch.setattr("pemn_compress.budget.header_margin", lambda deflated: -1500)
    compress(CompressOptions(**OPTIONS, output="free.pemn"))
    assert "dense.f32" not in pemn.read_pemn("free.pemn").tensors
    budget = (fmnist_cwd / "free.pemn").stat().st_size - recipe_bytes("free.pemn") - 400
    with pytest.raises(TrainingFailed, match="even with one kept weight per layer: its header came out larger"):
        compress(CompressOptions(**OPTIONS, output="fit.pemn", target_size=budget))
    assert not (fmnist_cwd / "fit.pemn").exists()


class DeadChannels(Callback):
    """After training, four channels of every BatchNorm with a running variance of 1e-6: once folded their scales
    are about 1,000 times the others, the outliers int8 leftovers keep in float16."""

    def on_fit_end(self, trainer, result) -> None:
        with torch.no_grad():
            for module in trainer.model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_var[:4] = 1e-6


def test_int8_leftovers_keep_no_more_outliers_than_the_budget_counted(fmnist_cwd, monkeypatch):
    # the budget counts one outlier per int8 tensor (one value in 10**9); the trained model has four in each folded
    # scale (and shift), more than there is room for: the file keeps as many as counted, no more, and meets the target
    monkeypatch.setattr("pemn_compress.fileformat.q8.OUTLIER_RESERVE", 10**9)
    options = dict(OPTIONS, dense_dtype="int8")
    compress(CompressOptions(**options, output="free.pemn"))
    budget = (fmnist_cwd / "free.pemn").stat().st_size + 400  # a density under the default, the header's margin
    compress(CompressOptions(**options, output="fit.pemn", target_size=budget), callbacks=[DeadChannels()])
    assert (fmnist_cwd / "fit.pemn").stat().st_size <= budget
    rows = pemn.read_pemn("fit.pemn").header["dense"]["tensors"]
    q8 = [row for row in rows if row[2] == "q8"]
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in pemn.create_model("test_convmixer").modules())
    assert len(q8) < 4 * batchnorms  # fewer tensors than candidates: the cap binds
    assert sum(row[3] for row in q8) == len(q8)
