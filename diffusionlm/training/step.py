"""The MDLM loss as one compiled graph, for accelerators.

`MDLMObjective` selects masked positions with a bool mask: each `x[mask]` is a data-dependent shape, which
breaks a torch.compile graph in two and leaves the fp32 cross-entropy over [N, V] logits to eager kernels
(the logits are written in bf16, read, upcast and written again in fp32, and the same again backwards).
`CompiledMaskedLoss` computes the same function: it draws times and masks exactly as the objective does
(same generator calls, same order), turns the mask into flat indices (the step's one host sync, small and
early), then runs body, head on the masked rows, fp32 log-softmax and the weighted sum in a single graph,
so the compiler fuses the upcast and the softmax into the head's epilogue and the masked count varies
without recompiling (automatic dynamic shapes).

The CPU path of the trainer keeps `MDLMObjective` (bit-identical resume tests depend on its exact kernels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from diffusionlm.diffusion.mdlm import MDLMObjective, forward_mask, sample_times


class _RowCrossEntropy(torch.autograd.Function):
    """Per-row fp32 cross-entropy, logsumexp(z) - z[target], with the gradient softmax(z) - onehot(target).

    F.cross_entropy's function and gradient, written out so that the compiler keeps only the low-precision
    logits and one fp32 logsumexp per row for backward, and computes the logits' gradient in one pass
    (the log-softmax form writes and re-reads a full fp32 [N, V] tensor; autograd of a gather scatters
    into a zero-filled fp32 [N, V] one).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        lse = torch.logsumexp(z, dim=-1)
        ctx.save_for_backward(logits, targets, lse)
        return lse - z.gather(-1, targets[:, None]).squeeze(-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        z = logits.float()
        onehot = torch.arange(z.shape[-1], device=z.device)[None, :] == targets[:, None]
        grad_z = (torch.exp(z - lse[:, None]) - onehot.float()) * grad[:, None]
        return grad_z.to(logits.dtype), None


def cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fp32 cross-entropy of each row of `logits` [N, V] against `targets` [N] (no reduction)."""
    return _RowCrossEntropy.apply(logits, targets)


def _masked_loss(model: nn.Module, objective: MDLMObjective, xt: torch.Tensor, x0: torch.Tensor,
                 attention_mask: torch.Tensor | None, t: torch.Tensor, index: torch.Tensor,
                 normalizer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, sum of masked CE, number of correct argmax predictions) for the masked flat positions `index`."""
    logits = model(xt, attention_mask=attention_mask, t=t, output_index=index)  # [N, V], <mask> logit -inf
    targets = x0.flatten().index_select(0, index)
    weights = objective.schedule.weight(t).index_select(0, torch.div(index, x0.shape[1], rounding_mode="floor"))
    ce = cross_entropy_rows(logits, targets)
    loss = (weights * ce).sum() / normalizer
    with torch.no_grad():
        ce_sum = ce.detach().sum()
        correct = (logits.detach().argmax(-1) == targets).sum()
    return loss, ce_sum, correct


class CompiledMaskedLoss:
    """Drop-in for `objective(model, batch, generator, normalizer)` with masked-only logits."""

    def __init__(self, objective: MDLMObjective, model: nn.Module, compile: bool = True):
        if not objective.masked_only_logits:
            raise ValueError("CompiledMaskedLoss computes logits at masked positions only (masked_only_logits)")
        self.objective, self.model = objective, model

        def loss_fn(xt: torch.Tensor, x0: torch.Tensor, attention_mask: torch.Tensor | None, t: torch.Tensor,
                    index: torch.Tensor, normalizer: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return _masked_loss(self.model, self.objective, xt, x0, attention_mask, t, index, normalizer)

        self.compiled = compile
        self.loss_fn: Callable[..., tuple[torch.Tensor, ...]] = torch.compile(loss_fn) if compile else loss_fn

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None,
                 normalizer: torch.Tensor | float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obj = self.objective
        x0 = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        real = obj.real_tokens(batch)
        t = sample_times(x0.shape[0], obj.eps, obj.antithetic, generator, x0.device)
        masked = forward_mask(x0, obj.schedule.mask_prob(t), real, generator)
        xt = torch.where(masked, obj.mask_token_id, x0)
        n_masked = masked.sum()
        index = masked.flatten().nonzero().squeeze(1)  # host sync: the masked count sizes the head
        if self.compiled:  # one graph for every masked count, instead of a recompile on the second one
            torch._dynamo.maybe_mark_dynamic(index, 0)
        if normalizer is None:
            normalizer = real.sum().clamp_min(1)
        if not isinstance(normalizer, torch.Tensor):  # a fill kernel, not a blocking host-to-device copy
            normalizer = torch.full((), float(normalizer), device=x0.device)
        loss, ce_sum, correct = self.loss_fn(xt, x0, attention_mask, t, index, normalizer)
        denom = n_masked.clamp_min(1)
        metrics = {
            "masked_ce": ce_sum / denom,
            "masked_acc": correct / denom,
            "mask_fraction": n_masked / normalizer,
            "num_masked": n_masked,
        }
        return loss, metrics
