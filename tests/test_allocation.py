"""Global (cross-layer) density allocation (pemn_compress.allocation): a hand-computed allocation, the
masks a file stores for it (decoded by the reference reader), and real compress runs through it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pemn_compress as pemn
from pemn_compress.allocation import GlobalAllocation, allocate_, is_global, kept_counts, set_model_density_
from pemn_compress.annealing import DensityAnnealing
from pemn_compress.compress import CompressOptions, TrainingInterrupted, compress
from pemn_compress.config import DEFAULT_DENSITY, MaskConfig
from pemn_compress.errors import ConfigError, ModelError
from pemn_compress.faults import InterruptAfterSteps
from pemn_compress.surgery import config_of, masked_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def two_layers(scores_a: list[float], scores_b: list[float], density: float) -> nn.Module:
    """Linear(4, 2) (8 weights, fan-in 4: initial score bound 1/2) then Linear(2, 8) (16 weights, fan-in 2:
    bound 1/sqrt(2)), masked at ``density``, with the given scores (row-major)."""
    model = pemn.mask_(nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 8)), MaskConfig(density=density))
    (_, a), (_, b) = masked_layers(model)
    with torch.no_grad():
        a.scores.copy_(torch.tensor(scores_a).view(2, 4))
        b.scores.copy_(torch.tensor(scores_b).view(8, 2))
    return model


# scores chosen so the three rules disagree (density 0.25: 2 + 4 = 6 weights kept in all):
#   uniform: A keeps 2, B keeps 4;
#   raw |score| across layers: B's 0.50 0.49 0.48 0.47, then A's 0.40 0.39 -> A 2, B 4;
#   |score| / initial bound: A's 0.80 0.78 0.76 0.74 (x2), then B's 0.707 0.693 (x sqrt 2) -> A 4, B 2.
A = [0.40, -0.39, 0.38, -0.37, 0.01, 0.02, -0.03, 0.04]
B = [0.50, -0.49, 0.48, 0.47, -0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16]


def test_scores_are_compared_relative_to_their_initial_bound():
    model = two_layers(A, B, density=0.25)
    assert [layer.kept for _, layer in masked_layers(model)] == [2, 4]  # uniform until allocated
    allocate_(model)
    (_, a), (_, b) = masked_layers(model)
    assert (a.kept, b.kept) == (4, 2)
    assert a.mask().flatten().tolist() == [True] * 4 + [False] * 4
    assert b.mask().flatten().tolist() == [True, True] + [False] * 14
    assert (a.density, b.density) == (0.5, 0.125)
    assert config_of(model).density == 0.25 and is_global(model)  # the nominal density is what the config says


def test_every_layer_keeps_at_least_one_weight():
    model = two_layers(A, [0.001 * (i + 1) for i in range(16)], density=0.25)  # B's scores below all of A's
    assert kept_counts(model, 0.25) == [5, 1]  # B: its largest, all the same; A: its 5 largest of the other 5
    allocate_(model)
    assert dict(masked_layers(model))["2"].mask().flatten().tolist() == [False] * 15 + [True]


def test_a_lower_density_keeps_a_subset():
    torch.manual_seed(0)
    model = pemn.mask_(
        pemn.create_model("test_convmixer", in_chans=1, num_classes=10, img_size=28), MaskConfig(density=0.5)
    )
    with torch.no_grad():  # scores that moved away from their initial scales, layer by layer
        for i, (_, layer) in enumerate(masked_layers(model)):
            layer.scores.mul_(1.0 + i)
    allocate_(model)
    wide = {name: layer.mask().clone() for name, layer in masked_layers(model)}
    totals = []
    for density in (0.3, 0.1, 0.02):
        set_model_density_(model, density)
        assert is_global(model) and config_of(model).density == density
        masks = {name: layer.mask() for name, layer in masked_layers(model)}
        assert all(not (masks[n] & ~wide[n]).any() for n in masks)  # nothing kept that the wider one dropped
        kept = sum(int(m.sum()) for m in masks.values())
        n = [math.prod(m.shape) for m in masks.values()]
        assert kept == sum(min(k, max(1, math.floor(density * k + 0.5))) for k in n)  # the spec's count, in all
        totals.append(kept)
        wide = masks
    assert totals == sorted(totals, reverse=True)
    assert len({layer.density for _, layer in masked_layers(model)}) > 1  # not uniform: the scales differed


def test_bad_input():
    with pytest.raises(ModelError):
        allocate_(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ConfigError):
        kept_counts(two_layers(A, B, 0.25), 0.0)
    with pytest.raises(ConfigError):
        GlobalAllocation(every=0)


def test_a_file_stores_the_allocation_and_the_reference_reader_decodes_it(tmp_path, reference_reader):
    model = allocate_(two_layers(A, B, density=0.25))
    path = tmp_path / "g.pemn"
    pemn.save(model, path, dense_dtype="float32")  # the biases as trained: outputs compared exactly
    ref = reference_reader.read(path)
    assert [int(m.sum()) for m in ref["masks"].values()] == [4, 2]
    assert ref["masks"]["0"].flatten().tolist() == [1] * 4 + [0] * 4
    assert ref["header"]["config"]["density"] == 0.25
    loaded = pemn.load(path, model=nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 8)), masked=True)
    assert [layer.kept for _, layer in masked_layers(loaded)] == [4, 2]
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), model(x))


# 256 images in batches of 32 for 2 epochs: 16 optimizer steps
OPTIONS = dict(model="test_convmixer", max_train_samples=256, epochs=2, batch_size=32, threads=1, density=0.1)


def _kept(path) -> list[int]:
    masks = pemn.fileformat.reader.decode_masks(pemn.read_pemn(path))
    return [int(m.sum()) for m in masks.values()]


def test_a_run_writes_a_globally_allocated_file(fmnist_cwd):
    compress(CompressOptions(**OPTIONS, output="uniform.pemn"))
    compress(CompressOptions(**OPTIONS, output="global.pemn"), callbacks=[GlobalAllocation()])
    uniform, allocated = _kept("uniform.pemn"), _kept("global.pemn")
    shapes = [layer.shape for layer in pemn.read_pemn("global.pemn").layers]
    assert uniform == [max(1, math.floor(0.1 * math.prod(s) + 0.5)) for s in shapes]
    assert allocated != uniform and sum(allocated) == sum(uniform)  # moved, same total
    assert pemn.read_pemn("global.pemn").header["config"]["density"] == 0.1


def test_it_composes_with_annealing_and_resumes_to_the_same_file(fmnist_cwd):
    def run(output, *extra, resume=False, checkpoint_every=None):
        more = {} if checkpoint_every is None else {"checkpoint_every": checkpoint_every}
        return compress(
            CompressOptions(**OPTIONS, output=output, resume=resume, **more),
            callbacks=[DensityAnnealing(end=0.5), GlobalAllocation(), *extra],
        )

    run("ref.pemn")
    with pytest.raises(TrainingInterrupted):
        run("cut.pemn", InterruptAfterSteps(5), checkpoint_every=0)
    run("cut.pemn", resume=True)
    assert (fmnist_cwd / "cut.pemn").read_bytes() == (fmnist_cwd / "ref.pemn").read_bytes()
    uniform = [max(1, math.floor(0.1 * math.prod(s.shape) + 0.5)) for s in pemn.read_pemn("ref.pemn").layers]
    kept = _kept("ref.pemn")
    assert kept != uniform and sum(kept) == sum(uniform)  # annealed down to 0.1, globally


def test_a_file_over_its_budget_is_fitted_keeping_the_global_allocation(fmnist_cwd, monkeypatch):
    # an estimate of the deflated header 1,500 B too optimistic: the density chosen (the default) is too high
    monkeypatch.setattr("pemn_compress.budget.header_margin", lambda deflated: -1500)
    options = {k: v for k, v in OPTIONS.items() if k != "density"} | {"model": "test_convmixer"}
    compress(CompressOptions(**options, output="free.pemn"), callbacks=[GlobalAllocation()])
    budget = (fmnist_cwd / "free.pemn").stat().st_size - 10  # fits once the recipe is left out
    compress(CompressOptions(**options, output="norecipe.pemn", target_size=budget), callbacks=[GlobalAllocation()])
    assert pemn.read_pemn("norecipe.pemn").header["config"]["density"] == DEFAULT_DENSITY
    budget = (fmnist_cwd / "norecipe.pemn").stat().st_size - 10  # over even without it: the density must go
    compress(CompressOptions(**options, output="fit.pemn", target_size=budget), callbacks=[GlobalAllocation()])
    assert (fmnist_cwd / "fit.pemn").stat().st_size <= budget
    fitted = pemn.read_pemn("fit.pemn")
    final = fitted.header["config"]["density"]
    assert final < DEFAULT_DENSITY and "recipe" not in fitted.header["provenance"]
    kept = _kept("fit.pemn")
    uniform = [max(1, math.floor(final * layer.numel + 0.5)) for layer in fitted.layers]
    assert kept != uniform and sum(kept) == sum(uniform)  # lowered, still allocated across layers
    free = pemn.fileformat.reader.decode_masks(pemn.read_pemn("free.pemn"))
    for name, mask in pemn.fileformat.reader.decode_masks(fitted).items():
        assert not (mask & ~free[name]).any()  # same training: a subset of what the unfitted file kept
