"""Per-row cross-entropy statistics of logits: one read of them on GPUs."""

from __future__ import annotations

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
