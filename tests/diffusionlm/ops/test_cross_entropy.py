"""The cross-entropy statistics kernel against its PyTorch fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import diffusionlm.ops as ops
from diffusionlm.ops import cross_entropy as ce_module

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_cross_entropy_matches_reference(dtype):
    gen = torch.Generator().manual_seed(0)
    n_cols = 9000  # two full blocks and a partial one
    logits = (3 * torch.randn(6, n_cols, generator=gen)).to(dtype)
    logits[:, 3] = float("-inf")  # the <mask> column
    logits[1, 100] = logits[1, 8500] = 40.0  # a tie across blocks: the first index wins, as in torch.argmax
    logits[2, 10] = logits[2, 11] = 40.0  # a tie inside a block
    logits[4, :4096] = float("-inf")  # a whole leading block of -inf
    logits = logits.to(DEVICE)
    targets = torch.randint(5, n_cols, (6,), generator=gen).to(DEVICE)
    ce, lse, argmax = ops.row_cross_entropy(logits, targets)
    ce_ref, lse_ref, argmax_ref = ops.row_cross_entropy_reference(logits, targets)
    assert ce.dtype == lse.dtype == torch.float32 and argmax.dtype == torch.int64
    torch.testing.assert_close(lse, lse_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ce, ce_ref, rtol=1e-5, atol=1e-5)
    assert argmax.tolist() == argmax_ref.tolist()
    assert argmax[1].item() == 100 and argmax[2].item() == 10


def test_row_cross_entropy_of_no_rows():
    logits = torch.randn(0, 50, device=DEVICE)
    ce, lse, argmax = ops.row_cross_entropy(logits, torch.zeros(0, dtype=torch.int64, device=DEVICE))
    assert ce.shape == lse.shape == argmax.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_cross_entropy_matches_torch_with_masked_out_column(dtype):
    gen = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(64, 257, generator=gen)).to(dtype)
    z[:, 3] = float("-inf")  # the <mask> column the model always sets to -inf
    targets = torch.randint(5, 257, (64,), generator=gen)
    weights = torch.rand(64, generator=gen)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    ce_ref = F.cross_entropy(a.double(), targets, reduction="none")
    ce, _ = ops.cross_entropy_rows(b.to(DEVICE), targets.to(DEVICE))
    assert ce.dtype == torch.float32
    torch.testing.assert_close(ce.double(), ce_ref, rtol=1e-5, atol=1e-5)
    (weights.double() * ce_ref).sum().backward()
    (weights * ce).sum().backward()
    assert b.grad.dtype == dtype and torch.isfinite(b.grad).all()
    assert (b.grad[:, 3] == 0).all()
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(b.grad.double(), a.grad.double(), rtol=tol, atol=tol)


def _head_inputs(dtype, n_rows=7, d=16, vocab=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_rows, d, generator=gen).to(DEVICE, dtype)
    weight = (0.5 * torch.randn(vocab, d, generator=gen)).to(DEVICE, dtype)
    targets = torch.randint(5, vocab, (n_rows,), generator=gen).to(DEVICE)
    row_weights = torch.rand(n_rows, generator=gen).to(DEVICE)
    row_weights[-2:] = 0.0  # padding rows of a static-capacity batch
    return hidden, weight, targets, row_weights


def _loss_and_grads(fn, hidden, weight, targets, row_weights, excluded=3, upstream=1.0):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, ce, argmax = fn(h, w, targets, row_weights, excluded)
    (upstream * loss).backward()
    return loss, ce, argmax, h.grad, w.grad


@pytest.mark.parametrize("one_block", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_entropy_matches_reference(dtype, one_block, monkeypatch):
    if not one_block:  # rows longer than one block: the statistics pass, then the gradient pass
        monkeypatch.setattr(ce_module, "_ONE_BLOCK_MAX", 64)
        monkeypatch.setattr(ce_module, "_CE_BLOCK", 128)
    inputs = _head_inputs(dtype)
    ref = _loss_and_grads(ops.linear_cross_entropy_reference, *(x.float() if x.is_floating_point() else x
                                                                for x in inputs), upstream=2.5)
    ours = _loss_and_grads(ops.linear_cross_entropy, *inputs, upstream=2.5)
    assert ours[1].dtype == torch.float32 and ours[3].dtype == ours[4].dtype == dtype
    assert ours[2].tolist() == ref[2].tolist()
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    for a, b in zip(ours[:2], ref[:2]):
        torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol)
    for a, b in zip(ours[3:], ref[3:]):  # gradients scaled by the upstream 2.5; none from weight-0 rows
        torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol)


def test_linear_cross_entropy_never_predicts_the_excluded_column():
    hidden, weight, targets, row_weights = _head_inputs(torch.float32, seed=1)
    weight[3] = 100.0 * hidden.mean(0)  # the excluded token's logit would win every row
    _, ce, argmax, _, grad_w = _loss_and_grads(ops.linear_cross_entropy, hidden, weight, targets,
                                               row_weights)
    assert (argmax != 3).all() and torch.isfinite(ce).all()
    assert grad_w[3].abs().max().item() == 0.0, "a -inf logit has no gradient"
    _, ce_ref, argmax_ref, _, _ = _loss_and_grads(ops.linear_cross_entropy_reference, hidden, weight, targets,
                                                  row_weights)
    torch.testing.assert_close(ce, ce_ref)
    assert argmax.tolist() == argmax_ref.tolist()


def test_linear_cross_entropy_under_torch_compile_matches_eager():
    inputs = _head_inputs(torch.float32, seed=2)
    eager = _loss_and_grads(ops.linear_cross_entropy, *inputs)
    compiled = _loss_and_grads(torch.compile(ops.linear_cross_entropy, fullgraph=True), *inputs)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)
