"""int8 leftovers (format version 3, formats/pemn-v3.md): the q8 code, the writer's version choice, loading,
and `pemn compress --dense-dtype` (int8 on request, auto where a budget has no room for float16) on real
Fashion-MNIST images. The reference reader and the golden vectors check the same files independently
(tests/fileformat/test_vectors.py, tests/fileformat/test_q8_reference.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import run_compress

import pemn_compress as pemn
from pemn_compress.errors import ConfigError
from pemn_compress.export import _leftover_state, to_bytes
from pemn_compress.fileformat.q8 import allot_outliers, dequantize, quantize

QUICK = ["--max-train-samples", "256", "--epochs", "1", "--batch-size", "64", "--threads", "1"]
F16 = np.float16


def test_a_hand_computed_entry_decodes_to_its_values():
    # lo -0.5, step 0.25, codes 0, 1, 255 around an outlier 1000 at position 1
    values = dequantize(np.array([0, 1, 255], np.uint8), F16(-0.5), F16(0.25), np.array([1], np.uint16),
                        np.array([1000.0], np.float16), 4)
    assert values.dtype == np.float32
    assert values.tolist() == [-0.5, 1000.0, -0.25, 63.25]


def test_lo_plus_code_times_step_is_rounded_once_to_float32_ties_to_even():
    # float32's spacing at 1024 is 2**-13: 1024 + 2**-14 is a tie (to 1024, the even one) and 1024 + 3 * 2**-14 one
    # between 1024 + 2**-13 (odd) and 1024 + 2**-12 (even)
    values = dequantize(np.array([1, 3], np.uint8), F16(1024.0), F16(2.0**-14), np.zeros(0, np.uint16),
                        np.zeros(0, np.float16), 2)
    assert values.tolist() == [1024.0, 1024.0 + 2.0**-12]


def test_quantize_keeps_inliers_within_half_a_step_and_outliers_in_float16():
    x = (0.5 + 0.01 * np.arange(64, dtype=np.float32)).astype(np.float32)
    x[[3, 40]] = [400.0, -300.0]  # channels with a tiny running variance: far over 16x the median magnitude
    coded = quantize(x)
    assert coded is not None and coded.index.tolist() == [3, 40]
    decoded = dequantize(coded.codes, coded.lo, coded.step, coded.index, coded.values, x.size)
    assert decoded[[3, 40]].tolist() == [400.0, -300.0]  # both exact in float16
    inliers = np.delete(np.arange(64), [3, 40])
    # the grid spans 0.5 .. 1.13 in 255 steps; float16 rounding of lo and step adds at most a few of its ulps
    assert np.abs(decoded[inliers] - x[inliers]).max() <= float(coded.step) / 2 + 255 * 2.0**-20 + 2.0**-11
    assert coded.nbytes == 62 + 4 + 2 * 4  # a byte per inlier, lo and step, 4 bytes per outlier


def test_outliers_over_the_cap_join_the_grid_the_largest_kept():
    # median magnitude 1: 300, -200 and 50 are all over 16x it; with room for one, -200 and 50 join the grid,
    # which then runs from -200 (lo) to 50: step (50 + 200) / 255 = 0.98..., float16 0.98047
    x = np.ones(32, np.float32)
    x[[5, 9, 20]] = [50.0, 300.0, -200.0]
    coded = quantize(x, max_outliers=1)
    assert coded is not None and coded.index.tolist() == [9] and coded.values.tolist() == [300.0]
    assert (float(coded.lo), float(coded.step)) == (-200.0, float(F16(250 / 255)))
    decoded = dequantize(coded.codes, coded.lo, coded.step, coded.index, coded.values, x.size)
    assert decoded[9] == 300.0 and abs(decoded[5] - 50.0) <= float(coded.step) / 2
    assert quantize(x, max_outliers=3).index.tolist() == [5, 9, 20]  # a cap that does not bind changes nothing
    assert quantize(x).index.tolist() == [5, 9, 20]


def test_a_files_outliers_are_capped_at_its_reserve_the_farthest_off_their_median_first(monkeypatch):
    monkeypatch.setattr("pemn_compress.fileformat.q8.OUTLIER_RESERVE", 32)
    # three entries of 32 values: room for 1 outlier each, 3 in all. a (median 1) has candidates 1000x and 900x
    # its median, b (median 10) one at 50x, c (median 1) one at 800x: 1000x, 900x and 800x are kept
    a, b, c = np.ones(32, np.float32), np.full(32, 10.0, np.float32), np.ones(32, np.float32)
    a[[0, 1]] = [1000.0, -900.0]
    b[7] = 500.0
    c[3] = 800.0
    assert allot_outliers([a, b, c]) == [2, 0, 1]
    assert allot_outliers([a, b]) == [2, 0]  # room for 2: b's 50x is the third farthest
    assert allot_outliers([a]) == [1]
    # 33 values leave room for 2 (one in 32, rounded up); an entry q8 cannot hold (not finite) has no room
    assert allot_outliers([np.concatenate([a, [1.0]]).astype(np.float32)]) == [2]
    assert allot_outliers([a, np.array([np.inf] * 40, np.float32)]) == [1, 0]


@pytest.mark.parametrize("values, why", [
    (np.array([1.0, np.nan, 2.0, 3.0, 4.0, 5.0], np.float32), "not finite"),
    (np.ones(65_537, np.float32), "more than 65,536 values"),
    (np.array([1.0] * 15 + [1e6], np.float32), "an outlier beyond float16"),
    (np.array([1.0, 2.0, 3.0, 4.0], np.float32), "4 bytes of range: no smaller than float16"),
])
def test_quantize_leaves_to_float16_what_q8_cannot_hold(values, why):
    assert quantize(values) is None, why


def _folded_model() -> torch.nn.Module:
    model = pemn.create_model("test_convmixer", dim=64)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.running_var[:2] = 1e-5  # two dead channels per norm: folded scales near 300
                module.weight.copy_(torch.randn(module.num_features, generator=generator))
    pemn.mask_(model, pemn.MaskConfig(density=0.2))
    return model.eval()


def test_int8_files_are_version_3_and_load_to_the_decoded_leftovers(tmp_path):
    model = _folded_model()
    int8 = pemn.save(model, tmp_path / "int8.pemn", dense_dtype="int8", fold_batchnorm=True)
    fp16 = pemn.save(model, tmp_path / "fp16.pemn", dense_dtype="float16", fold_batchnorm=True)
    pf, pf16 = pemn.read_pemn(int8), pemn.read_pemn(fp16)
    assert (pf.format_version, pf16.format_version) == (3, 2)  # version 3 only where it is needed
    assert pf.file_header.dense.dtype == "int8" and int8.stat().st_size < fp16.stat().st_size
    groups = {entry.group for entry in pf.file_header.dense.tensors}
    assert "q8" in groups and sum(entry.outliers or 0 for entry in pf.file_header.dense.tensors) >= 2 * 3
    assert pf.file_header.fingerprint == pf16.file_header.fingerprint  # the masked weights are unchanged
    state, _ = _leftover_state(model, fold_batchnorm=True)
    loaded = pemn.load(int8, device="cpu").state_dict()
    for key, value in pf.dense_arrays().items():
        assert torch.equal(loaded[key], torch.from_numpy(np.array(value)))  # what the loader copies
        error = (torch.from_numpy(np.array(value)) - state[key].detach().float()).abs()
        spread = float(state[key].detach().float().abs().max())
        assert float(error.max()) <= spread / 255 + 1e-3, key  # within a grid step of the trained value


def test_only_a_budgeted_file_caps_its_outliers(tmp_path, monkeypatch):
    # room for one outlier in 64 values: 1 in each 64-channel tensor, fewer than eight dead channels a norm make
    monkeypatch.setattr("pemn_compress.fileformat.q8.OUTLIER_RESERVE", 64)
    model = _folded_model()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var[:8] = 1e-5
    state, _ = _leftover_state(model, fold_batchnorm=True)
    floats = [state[k].detach().float().numpy().ravel() for k in state if state[k].is_floating_point()]
    candidates = sum(int((np.abs(x) > 16 * np.median(np.abs(x))).sum()) for x in floats)  # the spec's rule, by hand
    room = sum(-(-x.size // 64) for x in floats)
    assert candidates > room

    def outliers(path) -> int:
        return sum(entry.outliers or 0 for entry in pemn.read_pemn(path).file_header.dense.tensors)

    free = pemn.save(model, tmp_path / "free.pemn", dense_dtype="int8", fold_batchnorm=True)
    assert outliers(free) == candidates  # no budget: every value far off its grid stays float16
    budgeted = pemn.save(model, tmp_path / "budget.pemn", dense_dtype="int8", fold_batchnorm=True, target_size="1MB")
    assert outliers(budgeted) == room  # what MaskConfig.for_target counted for a budget, no more
    dense = [pemn.read_pemn(path).tensor_bytes("dense.") for path in (free, budgeted)]
    assert dense[0] - dense[1] == 3 * (candidates - room)  # an outlier takes 4 bytes, a code 1


def test_the_dense_dtype_help_states_the_cap_the_writer_keeps():
    from pemn_compress.defaults import OPTIONS
    from pemn_compress.fileformat import q8

    assert f"budget at most one value in {q8.OUTLIER_RESERVE}, the others" in OPTIONS["dense_dtype"].help


def test_format_version_1_cannot_hold_int8_and_version_3_holds_float16(tmp_path):
    model = _folded_model()
    with pytest.raises(ConfigError, match="format version 3"):
        to_bytes(model, dense_dtype="int8", format_version=1)
    pf = pemn.read_pemn(to_bytes(model, dense_dtype="float16", format_version=3))
    assert pf.format_version == 3 and pf.file_header.dense.dtype == "float16"  # valid, if needless (spec section 5)


def test_compress_int8_on_request_writes_version_3_and_eval_reproduces_it(fmnist_cwd):
    run_compress("test_convmixer", *QUICK, "--dense-dtype", "int8", "-o", "int8.pemn")
    pf = pemn.read_pemn(fmnist_cwd / "int8.pemn")
    assert pf.format_version == 3 and pf.file_header.dense.dtype == "int8"
    assert pf.header["provenance"]["recipe"]["dense_dtype"] == "int8"
    result = run_compress("test_convmixer", *QUICK, "--dense-dtype", "int8", "--format-version", "1", expect=None)
    assert result.exit_code == 2 and "format version 1" in result.stderr
    from click.testing import CliRunner

    from pemn_compress.cli import cli

    evaluated = CliRunner().invoke(cli, ["eval", "int8.pemn"])
    assert evaluated.exit_code == 0 and "(same)" in evaluated.stdout


def _smallest(line: str) -> int:
    return int(re.search(r"the smallest file this model can make, ([\d,]+) B", line).group(1).replace(",", ""))


def test_auto_stores_int8_only_where_the_budget_has_no_room_for_float16(fmnist_cwd):
    model = ["test_convmixer", "--arch-kwarg", "dim=64", *QUICK]  # 2.3 KB of float16 leftovers
    refused = run_compress(*model, "--dense-dtype", "float16", "--target-size", "100", expect=None)
    assert refused.exit_code != 0 and "--dense-dtype int8" in refused.stderr  # the option that shrinks it
    smallest = _smallest(refused.stderr)  # float16's smallest file, by the writer's own trial
    run_compress(*model, "--target-size", smallest + 400, "-o", "roomy.pemn")
    run_compress(*model, "--target-size", smallest - 1, "-o", "tight.pemn")
    roomy, tight = pemn.read_pemn(fmnist_cwd / "roomy.pemn"), pemn.read_pemn(fmnist_cwd / "tight.pemn")
    assert (roomy.format_version, roomy.file_header.dense.dtype) == (2, "float16")
    assert (tight.format_version, tight.file_header.dense.dtype) == (3, "int8")
    assert tight.file_size <= smallest - 1
    assert tight.header["provenance"]["recipe"]["dense_dtype"] == "int8"


def test_a_range_narrower_than_float16_spacing_stays_float16():
    # 64 values from 1e-3 to 1.003e-3: a 255-level grid over them would need a step of 1.2e-8, a float16 subnormal
    # that rounds to 0 (error up to 3e-6); float16 itself spaces values near 1e-3 by 9.5e-7
    narrow = np.linspace(1e-3, 1.003e-3, 64, dtype=np.float32)
    assert quantize(narrow) is None
    assert quantize(np.full(64, 1e-3, np.float32)) is not None  # equal values: step 0 is exact
