"""Shared test fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with one torch thread (restored afterwards).

    The tests use tiny tensors; on a busy 2-core machine intra-op threads only add contention (ops
    measured up to 40x slower with 2 threads). Use with ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
