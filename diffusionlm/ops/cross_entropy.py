"""Per-row cross-entropy of logits: the statistics in one read of them on GPUs, and the differentiable op
built on them that keeps only the low-precision logits for its backward."""

from __future__ import annotations

from typing import Any

import torch

from diffusionlm.ops.dispatch import triton_kernels
from diffusionlm.ops.policy import PYTORCH, KernelPolicy

_CE_BLOCK = 4096


def row_cross_entropy_reference(logits: torch.Tensor, targets: torch.Tensor,
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1)
    return lse - z.gather(-1, targets[:, None]).squeeze(-1), lse, z.argmax(-1)


def row_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, kernels: KernelPolicy = PYTORCH,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of `logits` [N, V] against `targets` [N]: (fp32 cross-entropy, fp32 logsumexp, argmax).
    No gradient: the caller owns the backward (softmax minus one-hot, from the logsumexp)."""
    if kernels.uses_triton(logits):
        return torch.ops.diffusionlm.row_cross_entropy(logits, targets)
    return row_cross_entropy_reference(logits, targets)


class _RowCrossEntropy(torch.autograd.Function):
    """Per-row fp32 cross-entropy, logsumexp(z) - z[target], with the gradient softmax(z) - onehot(target).

    F.cross_entropy's function and gradient, written out so that only the low-precision logits and one
    fp32 logsumexp per row are kept for backward, and the logits' gradient is computed in one pass (the
    log-softmax form writes and re-reads a full fp32 [N, V] tensor; autograd of a gather scatters into a
    zero-filled fp32 [N, V] one). The forward is one read of the logits (`row_cross_entropy`), which
    also yields each row's argmax for the accuracy metric.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor, use_triton: bool,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if use_triton:
            ce, lse, argmax = torch.ops.diffusionlm.row_cross_entropy(logits, targets)
        else:
            ce, lse, argmax = row_cross_entropy_reference(logits, targets)
        ctx.save_for_backward(logits, targets, lse)
        ctx.mark_non_differentiable(argmax)
        return ce, argmax

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_argmax: Any) -> tuple[torch.Tensor, None, None]:
        logits, targets, lse = ctx.saved_tensors
        z = logits.float()
        onehot = torch.arange(z.shape[-1], device=z.device)[None, :] == targets[:, None]
        grad_z = (torch.exp(z - lse[:, None]) - onehot.float()) * grad[:, None]
        return grad_z.to(logits.dtype), None, None


def cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor, kernels: KernelPolicy = PYTORCH,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 cross-entropy, argmax) of each row of `logits` [N, V] against `targets` [N] (no reduction),
    differentiable in the logits."""
    return _RowCrossEntropy.apply(logits, targets, kernels.uses_triton(logits))


@torch.library.custom_op("diffusionlm::row_cross_entropy", mutates_args=())
def _row_cross_entropy_op(logits: torch.Tensor, targets: torch.Tensor,
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_rows, n_cols = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    loss = logits.new_empty(n_rows, dtype=torch.float32)
    lse = torch.empty_like(loss)
    argmax = logits.new_empty(n_rows, dtype=torch.int64)
    if n_rows:
        triton_kernels().row_cross_entropy_kernel[(n_rows,)](logits, targets, loss, lse, argmax, n_cols,
                                                              logits.stride(0), BLOCK=_CE_BLOCK)
    return loss, lse, argmax


@_row_cross_entropy_op.register_fake
def _(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_rows = logits.shape[0]
    return (logits.new_empty(n_rows, dtype=torch.float32), logits.new_empty(n_rows, dtype=torch.float32),
            logits.new_empty(n_rows, dtype=torch.int64))
