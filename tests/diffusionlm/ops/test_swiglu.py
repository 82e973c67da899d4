"""The SwiGLU kernels against their PyTorch fallback."""

from __future__ import annotations

import pytest
import torch

import diffusionlm.ops as ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


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
