"""The size budget (pemn_compress/budget.py): size parsing, the mask bound against the real encoder,
and the density choice against real encodings of masks chosen to be as large as possible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pemn_compress as pemn
from pemn_compress.budget import Trial, choose_density, mask_bytes_bound, parse_size
from pemn_compress.errors import ConfigError
from pemn_compress.export import to_bytes
from pemn_compress.fileformat.codecs import encode_mask
from pemn_compress.surgery import masked_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ------------------------------------------------------------------------------------------------ sizes

SIZES = [  # (typed, bytes), the bytes worked out by hand
    ("40000", 40_000), ("40KB", 40_000), ("40kb", 40_000), ("40KiB", 40_960), ("40kib", 40_960),
    ("1.5MB", 1_500_000), ("2MiB", 2_097_152), ("1GB", 1_000_000_000), ("1GiB", 1_073_741_824),
    ("512B", 512), (" 7 KB ", 7_000), ("0.5KiB", 512), ("1.0001KB", 1_000), (".5MB", 500_000), (123, 123),
]  # fmt: skip


@pytest.mark.parametrize(("typed", "expected"), SIZES)
def test_parse_size(typed, expected):
    assert parse_size(typed) == expected


@pytest.mark.parametrize("typed", ["", "KB", "40 K", "40XB", "-5KB", "1e3", "40KB5", "0", "0.4", 0, -1, 2.5, True,
                                   None])
def test_parse_size_refuses_anything_else(typed):
    with pytest.raises(ConfigError, match="target_size must be"):
        parse_size(typed)


# ------------------------------------------------------------------------------------------------ masks


def _check(mask: np.ndarray) -> None:
    """The writer's bytes for ``mask`` never exceed the bound for its size and kept count."""
    coded = encode_mask(mask, "auto")
    assert coded.data.size <= mask_bytes_bound(mask.size, int(mask.sum())), (mask.size, int(mask.sum()))


@settings(derandomize=True, deadline=None, max_examples=300)
@given(n=st.integers(1, 3000), density=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_mask_bound_holds_for_random_masks(n, density, seed):
    rng = np.random.default_rng(seed)
    ones = min(n, round(density * n))
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=ones, replace=False)] = True
    _check(mask)


@settings(derandomize=True, deadline=None, max_examples=300)
@given(n=st.integers(1, 3000), fraction=st.floats(0.0, 1.0), layout=st.sampled_from(["end", "start", "spread", "mid"]),
       invert=st.booleans())
def test_mask_bound_holds_for_adversarial_masks(n, fraction, layout, invert):
    """Masks whose rare bits sit where the gaps are longest (all at the end), evenly spread (every gap
    just under a power of two for some k), at the start, or in the middle; and their complements."""
    ones = min(n, round(fraction * n / 2))
    mask = np.zeros(n, dtype=bool)
    if layout == "end":
        mask[n - ones:] = True
    elif layout == "start":
        mask[:ones] = True
    elif layout == "spread" and ones:
        mask[np.linspace(n - 1, 0, ones).astype(int)] = True
    elif ones:
        mask[(n - ones) // 2:(n - ones) // 2 + ones] = True
    _check(~mask if invert else mask)


def test_mask_bound_is_raw_at_half_and_grows_with_ones():
    assert mask_bytes_bound(1000, 500) == 125  # raw: ceil(1000 / 8)
    assert mask_bytes_bound(1000, 1000) == mask_bytes_bound(1000, 0) == 125
    assert mask_bytes_bound(1001, 1) < 125 / 4
    for n in (7, 64, 1000, 4097):
        bounds = [mask_bytes_bound(n, m) for m in range(1, n // 2 + 1)]  # a mask keeps at least 1
        assert bounds == sorted(bounds)


# ------------------------------------------------------------------------------------------------ whole files


def _worst_masks(model: torch.nn.Module, how: str, seed: int) -> None:
    """Scores whose top-k puts the kept weights of every layer where the file is largest (at the end of
    the layer: the longest first gap) or at random."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in masked_layers(model):
            n = layer.scores.numel()
            if how == "end":
                layer.scores.copy_(torch.arange(n, dtype=torch.float32).reshape(layer.scores.shape) + 1)
            else:
                layer.scores.copy_(torch.rand(layer.scores.shape, generator=generator))


@pytest.mark.parametrize("name", ["test_convmixer", "test_mlp"])
def test_chosen_density_keeps_every_mask_within_the_budget(name):
    options = dict(dense_dtype="float16", fold_batchnorm=True)
    dense = pemn.create_model(name)
    trial = Trial(dense, pemn.MaskConfig(), **options)
    smallest, largest = trial.bound(trial.smallest_density()).total, trial.bound(0.5).total
    for budget in np.linspace(smallest, largest + 50, 6).astype(int):
        choice = choose_density(trial, int(budget))
        assert choice.bound.total <= budget and 0 < choice.density <= 0.5
        for how, seed in [("end", 0), ("random", 1), ("random", 2)]:
            model = pemn.create_model(name)
            pemn.mask_(model, pemn.MaskConfig(density=choice.density))
            _worst_masks(model, how, seed)
            assert len(to_bytes(model, **options)) <= budget, (budget, choice.density, how)
    with pytest.raises(ConfigError, match="below the smallest file this model can make"):
        choose_density(trial, smallest - 1)


def test_for_target_and_save_refuse_what_does_not_fit(tmp_path):
    dense = pemn.create_model("test_convmixer")
    config = pemn.MaskConfig.for_target(dense, target_size="4KiB", fold_batchnorm=True, strategy="dense", seed=3)
    assert config.strategy == "dense" and config.seed == 3 and 0 < config.density <= 0.5
    model = pemn.create_model("test_convmixer")
    pemn.mask_(model, config)
    assert (tmp_path / "a.pemn").exists() is False
    path = pemn.save(model, tmp_path / "a.pemn", fold_batchnorm=True, target_size="4KiB")
    assert path.stat().st_size <= 4096
    fp32 = pemn.save(model, tmp_path / "fp32.pemn", dense_dtype="float32").stat().st_size
    assert fp32 > path.stat().st_size  # float32 leftovers, BatchNorm unfolded: a larger file
    with pytest.raises(ConfigError, match=f"would be {fp32:,} B, over target_size {fp32 - 1:,} B; nothing was written"):
        pemn.save(model, tmp_path / "b.pemn", dense_dtype="float32", target_size=fp32 - 1)
    assert not (tmp_path / "b.pemn").exists()
    assert pemn.save(model, tmp_path / "b.pemn", dense_dtype="float32", target_size=fp32).stat().st_size == fp32
    ratio = pemn.MaskConfig.for_target(dense, target_ratio=2.0, fold_batchnorm=True)
    assert 0 < ratio.density <= 0.5
    for bad, match in [(dict(target_size=100), "below the smallest file"), (dict(), "exactly one"),
                       (dict(target_size=5000, target_ratio=2.0), "exactly one"),
                       (dict(target_size=5000, density=0.3), "mutually exclusive"),
                       (dict(target_ratio=-1.0), "target_ratio must be")]:
        with pytest.raises(ConfigError, match=match):
            pemn.MaskConfig.for_target(dense, **bad)
