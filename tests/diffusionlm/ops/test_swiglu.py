"""The SwiGLU kernels against their PyTorch fallback."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch

import diffusionlm.ops as ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_forward_and_backward_match_reference(dtype, kernels):
    gen = torch.Generator().manual_seed(0)
    hidden = 48  # rows x hidden is not a multiple of the block: the tail is masked
    gate_up = torch.randn(3, 37, 2 * hidden, generator=gen).to(DEVICE, dtype)
    grad = torch.randn(3, 37, hidden, generator=gen).to(DEVICE, dtype)
    x_ref = gate_up.float().clone().requires_grad_()
    out_ref = ops.swiglu_reference(x_ref)
    out_ref.backward(grad.float())
    x = gate_up.clone().requires_grad_()
    out = ops.swiglu(x, kernels)
    assert "swiglu" in type(out.grad_fn).__name__, "the kernel's backward is the one autograd will run"
    out.backward(grad)
    assert out.dtype == dtype and x.grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 2e-2  # bf16: one rounding of an fp32 result
    torch.testing.assert_close(out.float(), out_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(x.grad.float(), x_ref.grad, rtol=tol, atol=tol)


def test_swiglu_takes_the_kernel_only_with_an_mlp_policy_that_asks_for_it(kernels):
    """mlp="pytorch" keeps even the element-wise SwiGLU in PyTorch, whatever the Triton setting."""
    x = torch.randn(3, 2 * 8, device=DEVICE, requires_grad=True)
    assert "swiglu" in type(ops.swiglu(x, kernels).grad_fn).__name__
    for policy in (ops.PYTORCH, dataclasses.replace(kernels, mlp="pytorch"),
                   dataclasses.replace(kernels, triton="off")):
        assert "swiglu" not in type(ops.swiglu(x, policy).grad_fn).__name__


def test_swiglu_under_torch_compile_matches_eager(kernels):
    gen = torch.Generator().manual_seed(1)
    gate_up = torch.randn(4, 2 * 40, generator=gen, device="cpu").to(DEVICE)
    weight = torch.randn(40, generator=gen).to(DEVICE)

    def f(x):
        return (ops.swiglu(x, kernels) * weight).sum()

    x_eager, x_comp = gate_up.clone().requires_grad_(), gate_up.clone().requires_grad_()
    f(x_eager).backward()
    compiled = torch.compile(f, fullgraph=True)  # the custom op and its backward trace without breaks
    compiled(x_comp).backward()
    torch.testing.assert_close(x_comp.grad, x_eager.grad)


def _mlp_inputs(dtype, seed=0):
    # 74 rows, hidden 40, d 24: none a multiple of the test config's 32 x 32 x 16 tiles, so edge tiles clip
    # (hidden at the gate/up boundary too)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 37, 24, generator=gen)
    gate_up_w, down_w = 0.3 * torch.randn(80, 24, generator=gen), 0.3 * torch.randn(24, 40, generator=gen)
    grad = torch.randn(2, 37, 24, generator=gen)
    return [t.to(DEVICE, dtype) for t in (x, gate_up_w, down_w, grad)]


def _mlp_forward_backward(fn, x, gate_up_w, down_w, grad):
    leaves = [t.clone().requires_grad_() for t in (x, gate_up_w, down_w)]
    y = fn(*leaves)
    y.backward(grad)
    return [y] + [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_mlp_matches_reference(dtype, kernels):
    inputs = _mlp_inputs(dtype)
    exact = _mlp_forward_backward(ops.swiglu_mlp_reference, *[t.double() for t in inputs])
    ours = _mlp_forward_backward(partial(ops.swiglu_mlp, kernels=kernels), *inputs)
    plain = _mlp_forward_backward(partial(ops.swiglu_mlp_reference, kernels=kernels), *inputs)
    for o, p, e in zip(ours, plain, exact):
        assert o.dtype == dtype
        # within the rounding of the same computation done unfused (bf16: a few units in the last place)
        scale = e.abs().max().item()
        bound = 1e-6 * scale if dtype == torch.float32 else 2.5 * (p.double() - e).abs().max().item() + 1e-3 * scale
        assert (o.double() - e).abs().max().item() <= bound


def test_swiglu_mlp_uses_the_fused_backward_only_with_gradients(kernels):
    x, gate_up_w, down_w, _ = _mlp_inputs(torch.float32)
    y = ops.swiglu_mlp(x, gate_up_w.requires_grad_(), down_w.requires_grad_(), kernels)
    assert "SwiGLUMLP" in type(y.grad_fn.next_functions[0][0]).__name__  # under the reshape back to [B, T, d]
    with torch.no_grad():
        torch.testing.assert_close(ops.swiglu_mlp(x, gate_up_w, down_w, kernels), y.detach())
    y_plain = ops.swiglu_mlp(x, gate_up_w, down_w, dataclasses.replace(kernels, mlp="pytorch"))
    assert "SwiGLUMLP" not in type(y_plain.grad_fn.next_functions[0][0]).__name__, "mlp='pytorch': no kernel"
    torch.testing.assert_close(y_plain, y)


def test_swiglu_mlp_under_torch_compile_matches_eager(kernels):
    inputs = _mlp_inputs(torch.float32, seed=3)
    eager = _mlp_forward_backward(partial(ops.swiglu_mlp, kernels=kernels), *inputs)
    compiled_mlp = torch.compile(ops.swiglu_mlp, fullgraph=True)
    compiled = _mlp_forward_backward(partial(compiled_mlp, kernels=kernels), *inputs)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)
