"""The Triton kernels against their PyTorch fallbacks: on a GPU when there is one, otherwise on the CPU
through Triton's interpreter (the same kernel code, run element by element)."""

from __future__ import annotations

import os

import pytest
import torch

import diffusionlm.ops as ops

pytest.importorskip("triton", reason="Triton is not installed")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    if DEVICE == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("no GPU, and Triton's interpreter was not chosen before Triton was imported")
        monkeypatch.setenv("DIFFUSIONLM_TRITON", "interpret")
    else:
        monkeypatch.delenv("DIFFUSIONLM_TRITON", raising=False)


def test_kernels_are_used_and_can_be_turned_off(monkeypatch):
    t = torch.zeros(2, device=DEVICE)
    assert ops.triton_enabled(t)
    monkeypatch.setenv("DIFFUSIONLM_TRITON", "0")
    assert not ops.triton_enabled(t)
    monkeypatch.setenv("DIFFUSIONLM_TRITON", "auto")
    assert ops.triton_enabled(t) == (DEVICE == "cuda"), "CPU tensors take the PyTorch path by default"
    monkeypatch.setenv("DIFFUSIONLM_TRITON", "off")
    with pytest.raises(ValueError, match=r"DIFFUSIONLM_TRITON='off'.*auto, 1, 0, interpret"):
        ops.triton_enabled(t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_forward_and_backward_match_reference(dtype):
    gen = torch.Generator().manual_seed(0)
    hidden = 48  # rows x hidden is not a multiple of the block: the tail is masked
    gate_up = torch.randn(3, 37, 2 * hidden, generator=gen).to(DEVICE, dtype)
    grad = torch.randn(3, 37, hidden, generator=gen).to(DEVICE, dtype)
    x_ref = gate_up.float().clone().requires_grad_()
    out_ref = ops.swiglu_reference(x_ref)
    out_ref.backward(grad.float())
    x = gate_up.clone().requires_grad_()
    out = ops.swiglu(x)
    out.backward(grad)
    assert out.dtype == dtype and x.grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 2e-2  # bf16: one rounding of an fp32 result
    torch.testing.assert_close(out.float(), out_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(x.grad.float(), x_ref.grad, rtol=tol, atol=tol)


def test_swiglu_under_torch_compile_matches_eager():
    gen = torch.Generator().manual_seed(1)
    gate_up = torch.randn(4, 2 * 40, generator=gen, device="cpu").to(DEVICE)
    weight = torch.randn(40, generator=gen).to(DEVICE)

    def f(x):
        return (ops.swiglu(x) * weight).sum()

    x_eager, x_comp = gate_up.clone().requires_grad_(), gate_up.clone().requires_grad_()
    f(x_eager).backward()
    compiled = torch.compile(f, fullgraph=True)  # the custom op and its backward trace without breaks
    compiled(x_comp).backward()
    torch.testing.assert_close(x_comp.grad, x_eager.grad)


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
