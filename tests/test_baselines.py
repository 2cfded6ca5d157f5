"""The comparison baselines (pemn_compress.baselines) on hand-built tiny models: magnitude and random pruning
keep the hand-computed weights, and the int8, sparse and dense files hold the hand-quantized values,
checked by reading them with safetensors and numpy (not with the package's reader) and by their byte
layout (8-byte length, JSON header, data)."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file
from torch import nn

from pemn_compress.baselines import Pruning, load_artifact, save_dense, save_int8, save_sparse, save_sparse_packed
from pemn_compress.errors import ConfigError

W = [[0.1, -0.8, 0.3, 0.5], [-0.2, 0.05, 0.9, -0.4]]  # |w| ranks: 0.9 0.8 0.5 0.4 | 0.3 0.2 0.1 0.05
BIAS = [0.25, -1.5]


def tiny() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(W))
        model[0].bias.copy_(torch.tensor(BIAS))
    return model


class Steps:
    """What the callback reads of a Trainer: the step count and the run's total."""

    def __init__(self, total_steps: int):
        self.total_steps, self.step = total_steps, 0


def test_magnitude_pruning_at_half_keeps_the_four_largest_weights():
    model, trainer = tiny(), Steps(total_steps=4)  # the schedule ends at step int(0.75 * 4) = 3
    pruning = Pruning(model, "magnitude", 0.5, seed=0)
    pruning.on_fit_start(trainer)
    assert torch.equal(model[0].weight, torch.tensor(W))  # nothing pruned before the first step
    for step in (1, 2, 3):
        trainer.step = step
        pruning.on_batch_end(trainer, step, 0.0, 0, 1)
    expected = [[0.0, -0.8, 0.0, 0.5], [0.0, 0.0, 0.9, -0.4]]
    assert torch.equal(model[0].weight, torch.tensor(expected))  # the originals, bit for bit
    with torch.no_grad():
        model[0].weight.add_(1.0)  # an optimizer step that revives every pruned weight
    trainer.step = 4
    pruning.on_batch_end(trainer, 4, 0.0, 0, 1)
    assert (model[0].weight != 0).tolist() == [[False, True, False, True], [False, False, True, True]]


def test_random_pruning_keeps_a_fixed_mask_of_the_rounded_count():
    model, trainer = tiny(), Steps(total_steps=10)
    pruning = Pruning(model, "random", 0.7, seed=3)  # 8 weights, 30% kept: 2.4 -> 2
    pruning.on_fit_start(trainer)
    kept = model[0].weight != 0
    assert int(kept.sum()) == 2
    for step in range(1, 6):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        trainer.step = step
        pruning.on_batch_end(trainer, step, 0.0, 0, 1)
        assert torch.equal(model[0].weight != 0, kept)
    again = tiny()
    Pruning(again, "random", 0.7, seed=3).on_fit_start(Steps(10))
    assert torch.equal(again[0].weight != 0, kept)  # the seed decides the mask


def test_bad_pruning_and_artifact_kinds_are_config_errors():
    with pytest.raises(ConfigError, match="magnitude"):
        Pruning(tiny(), "smallest", 0.5, seed=0)
    with pytest.raises(ConfigError, match="sparsity"):
        Pruning(tiny(), "random", 1.0, seed=0)
    with pytest.raises(ConfigError, match="artifact kind"):
        load_artifact("zip", "x", tiny)


def layout(path) -> tuple[int, dict]:
    """(header length, header) as the safetensors layout defines them: little-endian u64, then JSON."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    return n, json.loads(blob[8 : 8 + n])


def test_int8_file_holds_the_hand_quantized_weights(tmp_path):
    model = tiny()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.27, -0.5, 0.254, 0.0], [0.02, -0.254, 0.1, 0.127]]))
    path = tmp_path / "q.safetensors"
    save_int8(model, path)
    stored = load_file(str(path))
    # row 0: scale 1.27 / 127 = 0.01; row 1: 0.254 / 127 = 0.002
    assert stored["0.weight.int8"].dtype == np.int8
    assert stored["0.weight.int8"].tolist() == [[127, -50, 25, 0], [10, -127, 50, 64]]  # 63.5 -> 64 (half-even)
    assert stored["0.weight.scale"].tolist() == pytest.approx([0.01, 0.002], rel=1e-6)
    assert stored["0.bias"].dtype == np.float16 and stored["0.bias"].tolist() == BIAS  # both exact in fp16
    assert "1.num_batches_tracked" not in stored and stored["1.running_var"].dtype == np.float16
    back = load_artifact("int8", path, tiny)
    assert back[0].weight.tolist()[0] == pytest.approx([1.27, -0.5, 0.25, 0.0], abs=1e-6)
    n, header = layout(path)
    data = sum(int(np.prod(v["shape"])) * {"I8": 1, "F32": 4, "F16": 2}[v["dtype"]]
               for k, v in header.items() if k != "__metadata__")  # fmt: skip
    assert os.path.getsize(path) == 8 + n + data


def test_sparse_file_holds_the_kept_positions_and_their_fp16_values(tmp_path):
    model = tiny()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, -0.8, 0.0, 0.5], [0.0, 0.0, 0.9, -0.4]]))
    path = tmp_path / "s.safetensors"
    save_sparse(model, path)
    stored = load_file(str(path))
    assert stored["0.weight.values"].dtype == np.float16
    assert stored["0.weight.values"].tolist() == np.array([-0.8, 0.5, 0.9, -0.4], np.float16).tolist()
    with safe_open(str(path), "np") as fh:
        coding = json.loads(fh.metadata()["masks"])["0.weight"]
    assert coding["codec"] == "raw" and coding["ones"] == 4  # 8 positions: one byte of raw bits is smallest
    assert stored["0.weight.mask"].tolist() == [0b01010011]  # row-major, most significant bit first
    back = load_artifact("sparse", path, tiny)
    expected = np.array([[0.0, -0.8, 0.0, 0.5], [0.0, 0.0, 0.9, -0.4]], np.float16).astype(np.float32)
    assert back[0].weight.detach().numpy().tolist() == expected.tolist()


def test_packed_sparse_file_folds_batchnorm_and_holds_three_tensors(tmp_path):
    model = tiny()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, -0.8, 0.0, 0.5], [0.0, 0.0, 0.9, -0.4]]))
        bn = model[1]
        bn.running_mean.copy_(torch.tensor([0.5, -1.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([2.0, 3.0]))
        bn.bias.copy_(torch.tensor([1.0, -1.0]))
        bn.eps = 0.0
    path = tmp_path / "p.safetensors"
    save_sparse_packed(model, path)
    stored = load_file(str(path))
    assert sorted(stored) == ["masks", "rest", "values"]
    assert stored["masks"].tolist() == [0b01010011]  # one raw byte, as save_sparse codes it
    assert stored["values"].tolist() == np.array([-0.8, 0.5, 0.9, -0.4], np.float16).tolist()
    # state-dict order: the Linear's bias, then BatchNorm folded by hand:
    # scale = w / sqrt(var), shift = b - mean * scale
    assert stored["rest"].tolist() == np.array(BIAS + [2.0 / 2, 3.0 / 0.5] + [1.0 - 0.5 * 1.0, -1.0 + 1.0 * 6.0],
                                               np.float16).tolist()  # fmt: skip
    n, _ = layout(path)
    assert os.path.getsize(path) == 8 + n + 1 + 2 * 4 + 2 * 6
    back = load_artifact("sparse-packed", path, tiny)
    x = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.0, -3.0, 2.0, 1.0]])
    assert torch.allclose(back(x), model.eval()(x), atol=1e-2)


def test_packed_sparse_file_with_int8_rest_holds_each_value_within_half_a_step(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 64, 3), nn.BatchNorm2d(64), nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        model[0].weight.mul_((torch.rand_like(model[0].weight) < 0.1).float())
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    model.eval()
    save_sparse_packed(model, tmp_path / "f16.safetensors")
    save_sparse_packed(model, tmp_path / "i8.safetensors", rest_dtype="int8")
    stored = load_file(str(tmp_path / "i8.safetensors"))
    # the conv bias and the folded scale and shift (64 values each) are int8, the 3 values of the Linear's bias are
    # not (7 bytes or more in q8 against 6 in float16)
    assert stored["rest.q8"].size == 3 * 64 and stored["rest"].size == 3
    data = [os.path.getsize(tmp_path / f) - 8 - layout(tmp_path / f)[0] for f in ("f16.safetensors", "i8.safetensors")]
    assert data[0] - data[1] == 3 * 64 - 3 * 4  # a byte instead of two for each of 192 values, less 3 ranges (lo, step)
    back = load_artifact("sparse-packed", tmp_path / "i8.safetensors", lambda: nn.Sequential(
        nn.Conv2d(1, 64, 3), nn.BatchNorm2d(64), nn.Flatten(), nn.Linear(64, 3)))
    model.requires_grad_(False)
    back.requires_grad_(False)
    bn = model[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # folded by hand
    folded = {"0.bias": model[0].bias, "1.weight": scale, "1.bias": bn.bias - bn.running_mean * scale}
    decoded = {"0.bias": back[0].bias}
    b2 = back[1]
    decoded["1.weight"] = b2.weight / torch.sqrt(b2.running_var + b2.eps)
    decoded["1.bias"] = b2.bias - b2.running_mean * decoded["1.weight"]
    for key, x in folded.items():
        step = float((x.max() - x.min()) / 255)
        error = (decoded[key] - x).abs().max().item()
        assert error <= step / 2 + 1e-3 * step + 2e-3 * x.abs().max().item() / 255, key  # + float16 lo and step
    assert back[3].bias.tolist() == model[3].bias.half().float().tolist()


@pytest.mark.parametrize("dtype,width", [(torch.float32, 4), (torch.float16, 2)])
def test_dense_file_size_is_its_header_and_every_value(tmp_path, dtype, width):
    model = tiny()
    path = tmp_path / "d.safetensors"
    save_dense(model, path, dtype)
    n, _ = layout(path)
    floats = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    assert os.path.getsize(path) == 8 + n + width * floats + 8  # + the int64 step counter
    back = load_artifact("dense", path, tiny)
    assert back[0].weight.tolist() == torch.tensor(W).to(dtype).float().tolist()
    assert not back.training
