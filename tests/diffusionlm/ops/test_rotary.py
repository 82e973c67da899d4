"""Rotary embedding of a fused q/k/v projection: the Triton backward against the PyTorch fallback."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import diffusionlm.ops as ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
B, T, H, D = 2, 9, 3, 8  # 3 heads: the kernel's block of H x D/2 pairs has a masked tail


def _inputs(dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, 3, H, D, generator=gen).to(DEVICE, dtype)
    angles = torch.outer(torch.arange(T, dtype=torch.float32), torch.rand(D // 2, generator=gen) * 3)
    cos, sin = angles.cos()[:, None].to(DEVICE, dtype), angles.sin()[:, None].to(DEVICE, dtype)
    # gradients as attention returns them: [B, T, H, D] values, the first two laid out head-major
    grads = [torch.randn(B, H, T, D, generator=gen).to(DEVICE, dtype).transpose(1, 2),
             torch.randn(B, H, T, D, generator=gen).to(DEVICE, dtype).transpose(1, 2),
             torch.randn(B, T, H, D, generator=gen).to(DEVICE, dtype)]
    return qkv, cos, sin, grads


def _forward_backward(fn, qkv, cos, sin, grads):
    x = qkv.clone().requires_grad_()
    outs = fn(x, cos, sin)
    torch.autograd.backward(outs, grads)
    return outs, x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_forward_and_backward_match_reference(dtype, kernels):
    qkv, cos, sin, grads = _inputs(dtype)
    outs_ref, grad_ref = _forward_backward(ops.rotary_qkv_reference, qkv.float(), cos.float(), sin.float(),
                                           [g.float() for g in grads])
    outs, grad = _forward_backward(partial(ops.rotary_qkv, kernels=kernels), qkv, cos, sin, grads)
    assert grad.dtype == dtype and grad.shape == qkv.shape
    tol = 1e-6 if dtype == torch.float32 else 2e-2  # bf16: the kernel rounds once, eager PyTorch per op
    for out, ref in zip(outs, outs_ref):
        torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(grad.float(), grad_ref, rtol=tol, atol=tol)


def test_rotary_backward_is_the_transposed_rotation(kernels):
    # q and k gradients alone: rotating the gradient back by the same angles undoes the forward's rotation,
    # so a gradient equal to the rotated input comes back as the input itself
    qkv, cos, sin, _ = _inputs(torch.float32, seed=1)
    q_rot, k_rot, _ = ops.rotary_qkv_reference(qkv, cos, sin)
    _, grad = _forward_backward(partial(ops.rotary_qkv, kernels=kernels), qkv, cos, sin,
                                [q_rot, k_rot, torch.zeros_like(q_rot)])
    torch.testing.assert_close(grad[:, :, :2], qkv[:, :, :2], rtol=1e-5, atol=1e-5)
    assert grad[:, :, 2].abs().max().item() == 0.0


def test_rotary_uses_the_kernel_backward_and_v_is_a_view_of_the_projection(kernels):
    qkv, cos, sin, _ = _inputs(torch.float32)
    x = qkv.clone().requires_grad_()
    q, _, v = ops.rotary_qkv(x, cos, sin, kernels)
    assert "RotaryQKV" in type(q.grad_fn).__name__, "the kernel's backward is the one autograd will run"
    assert v.data_ptr() == x[:, :, 2].data_ptr(), "v must not be copied on the way to attention"
    q, _, _ = ops.rotary_qkv(x, cos, sin, ops.PYTORCH)
    assert "RotaryQKV" not in type(q.grad_fn).__name__, "the all-PyTorch policy differentiates the reference"


def test_rotary_under_torch_compile_matches_eager(kernels):
    qkv, cos, sin, grads = _inputs(torch.float32, seed=2)
    outs, grad = _forward_backward(partial(ops.rotary_qkv, kernels=kernels), qkv, cos, sin, grads)
    compiled = torch.compile(ops.rotary_qkv, fullgraph=True)  # the custom backward traces without breaks
    outs_c, grad_c = _forward_backward(partial(compiled, kernels=kernels), qkv, cos, sin, grads)
    for out, out_c in zip(outs, outs_c):
        torch.testing.assert_close(out_c, out)
    torch.testing.assert_close(grad_c, grad)


@pytest.mark.usefixtures("kernels")  # Triton only: a GPU or Triton's interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_rotation_back_is_the_rotary_backward_of_q_and_k(dtype):
    """What a fused attention backward leaves in the projection's gradient (the rotated q and k gradients
    and v's) becomes the projection's true gradient, v's part untouched."""
    qkv, cos, sin, grads = _inputs(dtype, seed=2)
    _, grad_ref = _forward_backward(ops.rotary_qkv_reference, qkv.float(), cos.float(), sin.float(),
                                    [g.float() for g in grads])
    buf = torch.stack([g.contiguous() for g in grads], dim=2)  # [B, T, 3, H, D], as attention writes it
    v_before = buf[:, :, 2].clone()
    out = ops.rotate_back_qk_(buf, cos, sin)
    assert out is buf
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(buf.float(), grad_ref, rtol=tol, atol=tol)
    assert torch.equal(buf[:, :, 2], v_before)


@pytest.mark.usefixtures("kernels")
def test_in_place_rotation_back_refuses_a_strided_gradient():
    qkv, cos, sin, _ = _inputs(torch.float32)
    with pytest.raises(ValueError, match="contiguous"):
        ops.rotate_back_qk_(qkv.transpose(0, 1), cos, sin)
