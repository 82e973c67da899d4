"""Rotary position embedding applied to a fused q/k/v projection, with a one-pass backward on GPUs.

The forward is plain PyTorch (the compiler fuses it into one kernel that reads q and k once, and v stays a
view of the projection). The backward is where a kernel pays: attention hands back three separate
gradients, and the projection needs them rotated back (q, k) and interleaved into one [B, T, 3, H, D]
tensor; the compiled version of that reads and writes it in more passes than the one needed.
"""

from __future__ import annotations

from typing import Any

import torch

from diffusionlm.ops.dispatch import cdiv, triton_kernels
from diffusionlm.ops.policy import PYTORCH, KernelPolicy

_ROWS, _CHUNK = 8, 256  # positions x elements of one head-row per program of the backward kernel


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D] rotated per position in the rotate-half layout (cos, sin: [T, 1, D/2])."""
    x1, x2 = x.chunk(2, dim=-1)
    # x * cos + rotate_half(x) * sin, written per half
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def rotary_qkv_reference(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v = qkv.unbind(2)
    return rotate(q, cos, sin), rotate(k, cos, sin), v


def rotary_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kernels: KernelPolicy = PYTORCH,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rotated q, rotated k, v), each [B, T, H, D], from a projection viewed as [B, T, 3, H, D].

    cos, sin: [T, 1, D/2] in the projection's dtype. v is a view of the projection.
    """
    if torch.is_grad_enabled() and qkv.requires_grad and kernels.uses_triton(qkv):
        return _RotaryQKV.apply(qkv, cos, sin)
    return rotary_qkv_reference(qkv, cos, sin)


class _RotaryQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        ctx.save_for_backward(cos, sin)
        # v leaves as a view of the projection, but as this function's output, so its gradient comes to
        # the backward below with the other two
        return rotary_qkv_reference(qkv, cos, sin)

    @staticmethod
    def backward(ctx: Any, grad_q: torch.Tensor, grad_k: torch.Tensor, grad_v: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return torch.ops.diffusionlm.rotary_qkv_backward(grad_q, grad_k, grad_v, cos, sin), None, None


@torch.library.custom_op("diffusionlm::rotary_qkv_backward", mutates_args=())
def _rotary_qkv_backward_op(grad_q: torch.Tensor, grad_k: torch.Tensor, grad_v: torch.Tensor,
                            cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    B, T, H, D = grad_q.shape
    grads = [g if g.stride(-1) == 1 else g.contiguous() for g in (grad_q, grad_k, grad_v)]
    out = grads[0].new_empty(B, T, 3, H, D)
    strides = [s for g in grads for s in g.stride()[:3]]
    grid = (cdiv(B * T, _ROWS), cdiv(H * D, _CHUNK))
    triton_kernels().rotary_qkv_backward_kernel[grid](*grads, cos.contiguous(), sin.contiguous(), out, B * T, T,
                                                      H * D, *strides, HALF=D // 2, ROWS=_ROWS, CHUNK=_CHUNK)
    return out


@_rotary_qkv_backward_op.register_fake
def _(grad_q: torch.Tensor, grad_k: torch.Tensor, grad_v: torch.Tensor, cos: torch.Tensor,
      sin: torch.Tensor) -> torch.Tensor:
    B, T, H, D = grad_q.shape
    return grad_q.new_empty(B, T, 3, H, D)


_PAIR_ROWS, _PAIRS = 8, 128  # positions x (d, d + D/2) pairs of one head-row per program of the in-place kernel


def rotate_back_qk_(grad_qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """In place, on a contiguous projection gradient [B, T, 3, H, D] whose q and k parts hold the gradients of
    the rotated q and k: makes them the gradients of q and k (the transposed rotation); the v part is left
    alone. Triton only: for backward passes that write attention's gradients straight into `grad_qkv`."""
    B, T, _, H, D = grad_qkv.shape
    if not grad_qkv.is_contiguous():
        raise ValueError("rotate_back_qk_ needs a contiguous [B, T, 3, H, D] gradient")
    grid = (cdiv(B * T, _PAIR_ROWS), cdiv(H * D // 2, _PAIRS))
    triton_kernels().rotate_back_qk_inplace_kernel[grid](grad_qkv, cos.contiguous(), sin.contiguous(), B * T, T,
                                                        H * D, HALF=D // 2, ROWS=_PAIR_ROWS, PAIRS=_PAIRS)
    return grad_qkv
