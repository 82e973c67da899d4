"""Cross-entropy over logit rows: statistics in one read of the logits on GPUs, and the head + weighted
cross-entropy as one function whose gradient is computed in that same read."""

from __future__ import annotations

from typing import Any

import torch

from diffusionlm.ops.dispatch import triton_enabled, triton_kernels

_CE_BLOCK = 4096


def row_cross_entropy_reference(logits: torch.Tensor, targets: torch.Tensor,
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1)
    return lse - z.gather(-1, targets[:, None]).squeeze(-1), lse, z.argmax(-1)


def row_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of `logits` [N, V] against `targets` [N]: (fp32 cross-entropy, fp32 logsumexp, argmax).
    No gradient: the caller owns the backward (softmax minus one-hot, from the logsumexp)."""
    if triton_enabled(logits):
        return torch.ops.diffusionlm.row_cross_entropy(logits, targets)
    return row_cross_entropy_reference(logits, targets)


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


class _RowCrossEntropy(torch.autograd.Function):
    """Per-row fp32 cross-entropy, logsumexp(z) - z[target], with the gradient softmax(z) - onehot(target).

    F.cross_entropy's function and gradient, written out so that only the low-precision logits and one
    fp32 logsumexp per row are kept for backward, and the logits' gradient is computed in one pass (the
    log-softmax form writes and re-reads a full fp32 [N, V] tensor; autograd of a gather scatters into a
    zero-filled fp32 [N, V] one). The forward also yields each row's argmax for the accuracy metric.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ce, lse, argmax = row_cross_entropy(logits, targets)
        ctx.save_for_backward(logits, targets, lse)
        ctx.mark_non_differentiable(argmax)
        return ce, argmax

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_argmax: Any) -> tuple[torch.Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        z = logits.float()
        onehot = torch.arange(z.shape[-1], device=z.device)[None, :] == targets[:, None]
        grad_z = (torch.exp(z - lse[:, None]) - onehot.float()) * grad[:, None]
        return grad_z.to(logits.dtype), None


def cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 cross-entropy, argmax) of each row of `logits` [N, V] against `targets` [N] (no reduction),
    differentiable in the logits."""
    return _RowCrossEntropy.apply(logits, targets)


# ---------------------------------------------------------------- head + weighted cross-entropy
def linear_cross_entropy_reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                   row_weights: torch.Tensor, excluded: int,
                                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = hidden @ weight.t()
    logits = logits.index_fill(-1, torch.tensor([excluded], device=logits.device), float("-inf"))
    ce, argmax = cross_entropy_rows(logits, targets)
    return (row_weights * ce).sum(), ce.detach(), argmax


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         row_weights: torch.Tensor, excluded: int,
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The output head and a weighted cross-entropy over its rows, as one function.

    logits = hidden [N, d] @ weight [V, d]^T, with column `excluded` (the `<mask>` token) at -inf; returns
    (loss = sum of row_weights * cross-entropy, the fp32 cross-entropy per row, argmax per row). Only the
    loss carries a gradient (to hidden and weight; row_weights are constants). Under autocast the product
    runs in the autocast dtype, as a linear layer would.

    With Triton on a GPU the loss's gradient of the logits is computed in the forward, in the same read of
    the logits as the statistics (`cross_entropy_with_grad_kernel`), and kept instead of the logits: the
    backward only runs the two products. Elsewhere the plain composition runs.
    """
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    hidden, weight = hidden.to(dtype), weight.to(dtype)
    if torch.is_grad_enabled() and triton_enabled(hidden):
        return _LinearCrossEntropy.apply(hidden, weight, targets, row_weights, excluded)
    return linear_cross_entropy_reference(hidden, weight, targets, row_weights, excluded)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                row_weights: torch.Tensor, excluded: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = hidden @ weight.t()
        grad_logits, ce, argmax = torch.ops.diffusionlm.cross_entropy_with_grad(logits, targets, row_weights,
                                                                                excluded)
        ctx.save_for_backward(hidden, weight, grad_logits)
        ctx.mark_non_differentiable(ce, argmax)
        return (row_weights * ce).sum(), ce, argmax

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_ce: Any, _grad_argmax: Any):
        hidden, weight, grad_logits = ctx.saved_tensors
        # the loss's upstream gradient is a scalar: it scales the two small products, not the [N, V] one
        scale = grad_loss.to(hidden.dtype)
        return (grad_logits @ weight) * scale, (grad_logits.t() @ hidden) * scale, None, None, None


_ONE_BLOCK_MAX = 32768  # a row up to this many logits is held in registers (one program of 32 warps)


@torch.library.custom_op("diffusionlm::cross_entropy_with_grad", mutates_args=())
def _cross_entropy_with_grad_op(logits: torch.Tensor, targets: torch.Tensor, row_weights: torch.Tensor,
                                excluded: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_rows, n_cols = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    grad = torch.empty(n_rows, n_cols, dtype=logits.dtype, device=logits.device)
    ce = logits.new_empty(n_rows, dtype=torch.float32)
    argmax = logits.new_empty(n_rows, dtype=torch.int64)
    if n_rows:
        one_block = n_cols <= _ONE_BLOCK_MAX
        block = triton_kernels().next_power_of_2(n_cols) if one_block else _CE_BLOCK
        triton_kernels().cross_entropy_with_grad_kernel[(n_rows,)](
            logits, targets, row_weights.contiguous(), grad, ce, argmax, n_cols, logits.stride(0), excluded,
            BLOCK=block, ONE_BLOCK=one_block, num_warps=max(4, min(32, block // 1024)))
    return grad, ce, argmax


@_cross_entropy_with_grad_op.register_fake
def _(logits: torch.Tensor, targets: torch.Tensor, row_weights: torch.Tensor, excluded: int,
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_rows, n_cols = logits.shape
    return (logits.new_empty(n_rows, n_cols), logits.new_empty(n_rows, dtype=torch.float32),
            logits.new_empty(n_rows, dtype=torch.int64))
