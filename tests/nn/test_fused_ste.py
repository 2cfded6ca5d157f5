"""The fused straight-through masked weight (nn.topk.masked_weight_ste): the same forward bits and
gradients as the three-node ``weight * ste_topk_mask(scores, k)``, and a case computed by hand."""

from __future__ import annotations

import pytest
import torch

from pemn_compress.nn.topk import masked_weight_ste, ste_topk_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_hand_computed_case():
    scores = torch.tensor([[0.5, -2.0], [1.0, -0.1]], requires_grad=True)
    weight = torch.tensor([[-1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = masked_weight_ste(weight, scores, 2)  # keeps |-2.0| and |1.0|
    assert out.tolist() == [[0.0, 2.0], [3.0, 0.0]]
    assert torch.signbit(out[0, 0]) and not torch.signbit(out[1, 1])  # -1 * 0 is -0.0, as a float mask gives
    out.backward(torch.tensor([[1.0, 10.0], [100.0, 1000.0]]))
    # scores: grad * weight * sign(score), straight through the mask; weight: grad * mask
    assert scores.grad.tolist() == [[-1.0, -20.0], [300.0, -4000.0]]
    assert weight.grad.tolist() == [[0.0, 10.0], [100.0, 0.0]]


@pytest.mark.parametrize("weight_grad", [False, True])
@pytest.mark.parametrize("shape,density", [((7, 5), 0.5), ((4, 3, 3, 3), 0.1), ((3, 2), 1.0), ((16,), 0.3)])
def test_same_bits_as_the_three_node_version(shape, density, weight_grad):
    g = torch.Generator().manual_seed(1)
    base_scores = torch.randn(shape, generator=g)
    base_scores.view(-1)[0] = 0.0  # sgn(0) = 0 on both paths
    base_weight = torch.randn(shape, generator=g)
    grad = torch.randn(shape, generator=g)
    k = max(1, round(density * base_scores.numel()))
    results = []
    for fused in (True, False):
        scores = base_scores.clone().requires_grad_(True)
        weight = base_weight.clone().requires_grad_(weight_grad)
        out = masked_weight_ste(weight, scores, k) if fused else weight * ste_topk_mask(scores, k)
        out.backward(grad)
        results.append((out.detach(), scores.grad, weight.grad))
    (out_f, gs_f, gw_f), (out_r, gs_r, gw_r) = results
    assert torch.equal(out_f.view(torch.int32), out_r.view(torch.int32))  # bits, -0.0 included
    assert torch.equal(gs_f.view(torch.int32), gs_r.view(torch.int32))
    if weight_grad:
        assert torch.equal(gw_f.view(torch.int32), gw_r.view(torch.int32))
    else:
        assert gw_f is None and gw_r is None
