"""Determinism matrix: the same file gives the same float32 weight bits from the numpy reader, the
numpy-only reference reader, `pemn.load` (dense and masked form) with 1 and 2 torch threads, and 3
processes started with `spawn` in parallel; `pemn compress` repeated with one seed gives one file.
The CUDA column runs only where there is a GPU (scripts/gpu-check.sh covers it on a GPU machine)."""

from __future__ import annotations

import pytest
import torch
from support.determinism import determinism_files, determinism_matrix, weights_digest
from support.workspace import COMPRESS_ARGS, Workspace

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_weight_bits_across_readers_threads_and_processes(tmp_path):
    torch.set_num_threads(3)  # a count the matrix never sets itself (its columns use 1 and 2)
    try:
        matrix = determinism_matrix(tmp_path, processes=3)
        assert torch.get_num_threads() == 3, "the matrix did not restore the caller's thread count"
    finally:
        torch.set_num_threads(1)  # this module's one_torch_thread setting
    assert len(matrix["rows"]) == 5
    columns = set(matrix["rows"][0]["cells"])
    assert {"numpy reader", "reference reader", "load, 1 thread", "load, 2 threads", "masked, 2 threads",
            "process 3 of 3", "process 3 masked"} <= columns
    for row in matrix["rows"]:
        different = [column for column, same in row["cells"].items() if not same]
        assert not different, (row["file"], different)


@pytest.mark.slow
def test_compress_twice_gives_the_same_bytes(tmp_path):
    ws = Workspace(tmp_path)
    first = ws.reference()
    again = ws.cli(*COMPRESS_ARGS, "-o", tmp_path / "again.pemn")
    assert again.exit_code == 0 and (tmp_path / "again.pemn").read_bytes() == first
    ws.kill_window()  # a third run, in a fresh interpreter and with checkpoints every 2 steps
    assert ws.fresh_run["identical"], ws.fresh_run


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device here; scripts/gpu-check.sh (step 3) checks CUDA weight bits against numpy")
def test_cuda_column(tmp_path):
    for path, skeleton, label in determinism_files(tmp_path):
        fingerprint = __import__("pemn_compress").read_pemn(path).header["fingerprint"]["value"]
        for masked in (False, True):
            assert weights_digest(path, 1, masked, skeleton, device="cuda") == fingerprint, (label, masked)
