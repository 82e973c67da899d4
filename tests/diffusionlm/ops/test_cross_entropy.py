"""The cross-entropy statistics kernel against its PyTorch fallback, and the differentiable per-row
cross-entropy built on it against F.cross_entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import diffusionlm.ops as ops
from diffusionlm.ops import cross_entropy_rows

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_cross_entropy_matches_reference(dtype, kernels):
    gen = torch.Generator().manual_seed(0)
    n_cols = 9000  # two full blocks and a partial one
    logits = (3 * torch.randn(6, n_cols, generator=gen)).to(dtype)
    logits[:, 3] = float("-inf")  # the <mask> column
    logits[1, 100] = logits[1, 8500] = 40.0  # a tie across blocks: the first index wins, as in torch.argmax
    logits[2, 10] = logits[2, 11] = 40.0  # a tie inside a block
    logits[4, :4096] = float("-inf")  # a whole leading block of -inf
    logits = logits.to(DEVICE)
    targets = torch.randint(5, n_cols, (6,), generator=gen).to(DEVICE)
    ce, lse, argmax = ops.row_cross_entropy(logits, targets, kernels)
    ce_ref, lse_ref, argmax_ref = ops.row_cross_entropy_reference(logits, targets)
    assert ce.dtype == lse.dtype == torch.float32 and argmax.dtype == torch.int64
    torch.testing.assert_close(lse, lse_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ce, ce_ref, rtol=1e-5, atol=1e-5)
    assert argmax.tolist() == argmax_ref.tolist()
    assert argmax[1].item() == 100 and argmax[2].item() == 10


def test_row_cross_entropy_of_no_rows(kernels):
    logits = torch.randn(0, 50, device=DEVICE)
    ce, lse, argmax = ops.row_cross_entropy(logits, torch.zeros(0, dtype=torch.int64, device=DEVICE), kernels)
    assert ce.shape == lse.shape == argmax.shape == (0,)


@pytest.fixture(params=["pytorch", "triton"])
def ce_kernels(request):
    """cross_entropy_rows' forward both ways: PyTorch's statistics, and the kernel's (a GPU or the interpreter)."""
    return ops.PYTORCH if request.param == "pytorch" else request.getfixturevalue("kernels")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_cross_entropy_matches_torch_with_masked_out_column(dtype, ce_kernels):
    gen = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(64, 257, generator=gen)).to(dtype)
    z[:, 3] = float("-inf")  # the <mask> column the model always sets to -inf
    targets = torch.randint(5, 257, (64,), generator=gen)
    weights = torch.rand(64, generator=gen)
    a, b = z.clone().requires_grad_(), z.clone().to(DEVICE).requires_grad_()
    ce_ref = F.cross_entropy(a.double(), targets, reduction="none")
    ce, argmax = cross_entropy_rows(b, targets.to(DEVICE), ce_kernels)
    assert ce.dtype == torch.float32
    torch.testing.assert_close(ce.double().cpu(), ce_ref, rtol=1e-5, atol=1e-5)
    assert argmax.tolist() == z.float().argmax(-1).tolist()
    (weights.double() * ce_ref).sum().backward()
    (weights.to(DEVICE) * ce).sum().backward()
    assert b.grad.dtype == dtype and torch.isfinite(b.grad).all()
    assert (b.grad[:, 3] == 0).all()
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(b.grad.double().cpu(), a.grad.double(), rtol=tol, atol=tol)
