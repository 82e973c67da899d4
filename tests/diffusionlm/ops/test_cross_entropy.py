"""The cross-entropy statistics kernel against its PyTorch fallback."""

from __future__ import annotations

import pytest
import torch

import diffusionlm.ops as ops

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
