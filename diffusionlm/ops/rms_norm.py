"""A residual add and the RMSNorm that follows it, with a one-pass backward on GPUs.

In a pre-norm block the residual stream y = x + branch feeds both the rest of the stream and the next
norm, so the gradient of y is the stream's gradient plus the norm's. Compiled separately, the norm's
backward and that sum run as a kernel that moves the data well below the bandwidth; here one kernel reads
the two incoming gradients and y once and writes y's gradient, accumulating the weight's gradient per
program on the way. The forward stays PyTorch (the compiler fuses the add, the statistics and the
normalization into one kernel) and computes exactly `F.rms_norm`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from diffusionlm.ops.dispatch import cdiv, interpreting, triton_enabled, triton_kernels

_ROWS = 4  # rows per block of the backward kernel; each program walks several blocks


def add_rms_norm_reference(x: torch.Tensor, branch: torch.Tensor, weight: torch.Tensor, eps: float,
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    y = x + branch
    return y, F.rms_norm(y, (y.shape[-1],), weight.to(y.dtype), eps)


def add_rms_norm(x: torch.Tensor, branch: torch.Tensor, weight: torch.Tensor, eps: float,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, rms_norm(y) * weight) for y = x + branch (weight cast to y's dtype, as `RMSNorm` does).

    The fused backward runs when x and branch share a dtype (a bf16 residual stream); an fp32 stream
    with a bf16 branch keeps the compiled path, whose casts the compiler fuses.
    """
    if torch.is_grad_enabled() and triton_enabled(x) and x.dtype == branch.dtype:
        return _AddRMSNorm.apply(x, branch, weight.to(x.dtype), eps)
    return add_rms_norm_reference(x, branch, weight, eps)


class _AddRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, branch: torch.Tensor, weight: torch.Tensor, eps: float,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        y = x + branch
        y32 = y.float()
        rstd = torch.rsqrt(y32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(y, rstd, weight)
        # F.rms_norm's own formula: normalized and scaled in fp32, rounded once
        return y, (y32 * rstd * weight.float()).to(y.dtype)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor | None, grad_out: torch.Tensor):
        y, rstd, weight = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(y)
        grad, grad_weight = torch.ops.diffusionlm.add_rms_norm_backward(grad_y, grad_out, y, rstd, weight)
        return grad, grad, grad_weight, None


@torch.library.custom_op("diffusionlm::add_rms_norm_backward", mutates_args=())
def _add_rms_norm_backward_op(grad_y: torch.Tensor, grad_out: torch.Tensor, y: torch.Tensor, rstd: torch.Tensor,
                              weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape, d = y.shape, y.shape[-1]
    grad_y, grad_out, y = (t.reshape(-1, d).contiguous() for t in (grad_y, grad_out, y))
    rows = y.shape[0]
    grad = torch.empty_like(y)
    sms = 4 if interpreting() else torch.cuda.get_device_properties(y.device).multi_processor_count
    programs = max(1, min(cdiv(rows, _ROWS), 8 * sms))
    partial = torch.empty(programs, d, dtype=torch.float32, device=y.device)
    kernels = triton_kernels()
    kernels.add_rms_norm_backward_kernel[(programs,)](
        grad_y, grad_out, y, rstd.reshape(-1).contiguous(), weight.contiguous(), grad, partial, rows, d,
        ROWS=_ROWS, BLOCK_D=kernels.next_power_of_2(d), num_warps=8)
    return grad.view(shape), partial.sum(0).to(weight.dtype)


@_add_rms_norm_backward_op.register_fake
def _(grad_y: torch.Tensor, grad_out: torch.Tensor, y: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor,
      ) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(y), torch.empty_like(weight)
