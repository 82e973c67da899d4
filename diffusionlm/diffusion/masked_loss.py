"""MDLM's loss as one compiled graph with static shapes: the masked-rows path, for accelerators.

`MDLMObjective` selects masked positions with a bool mask: each `x[mask]` is a data-dependent shape, which
breaks a torch.compile graph in two and leaves the fp32 cross-entropy over [N, V] logits to eager kernels
(the logits are written in bf16, read, upcast and written again in fp32, and the same again backwards).
`CompiledMaskedLoss` computes the same function: it draws times and masks exactly as the objective does
(same generator calls, same order), turns the mask into flat indices, then runs body, head on the masked
rows, fp32 cross-entropy and the weighted sum in a single graph: the logits stay bf16 in memory, the
forward statistics take one read of them (`ops.cross_entropy_rows`) and the compiler fuses the upcast and
the softmax into the gradient's one pass.

With antithetic times the number of masked positions has a tight upper bound (`static_capacity`), so the
indices come from `torch.nonzero_static` padded to that bound: no host sync, one static shape. Padded rows
carry weight 0 and are left out of every metric. A count above the bound is reported as `num_dropped`
(the trainer then skips the update and says so) rather than silently scoring fewer tokens. Without
antithetic times the exact `nonzero` (one host sync, dynamic shapes) is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from diffusionlm.diffusion.noise import forward_mask, sample_times
from diffusionlm.ops import PYTORCH, KernelPolicy, cross_entropy_rows

if TYPE_CHECKING:
    from diffusionlm.diffusion.mdlm import MDLMObjective


def static_capacity(mask_prob: Callable[[torch.Tensor], torch.Tensor], batch_size: int, length: int, eps: float,
                    sigmas: float = 8.0) -> int:
    """An upper bound on the masked count of a [batch_size, length] batch with antithetic times.

    Antithetic times put one t in each stratum [eps + (1 - eps) b / B, eps + (1 - eps) (b + 1) / B), and a
    schedule's mask probability grows with t, so the expected count is at most T * sum_b p(top of stratum b);
    the count is a sum of independent Bernoulli draws, so `sigmas` standard deviations above that bound
    is never exceeded in practice (8 sigma: odds below 1e-15 per step). Padding only lowers the count.
    """
    tops = eps + (1.0 - eps) * torch.arange(1, batch_size + 1, dtype=torch.float64) / batch_size
    p = mask_prob(tops).clamp(0.0, 1.0)
    mean = float(p.sum()) * length
    std = math.sqrt(max(float((p * (1 - p)).sum()) * length, 1.0))
    return min(batch_size * length, math.ceil(mean + sigmas * std) + 8)


def _masked_loss(model: nn.Module, objective: MDLMObjective, kernels: KernelPolicy, xt: torch.Tensor,
                 x0: torch.Tensor, attention_mask: torch.Tensor | None, t: torch.Tensor, index: torch.Tensor,
                 normalizer: torch.Tensor, n_valid: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, sum of masked CE, number of correct argmax predictions) for the masked flat positions `index`.

    n_valid: with a padded (static-size) `index`, only its first n_valid rows are masked positions.
    """
    logits = model(xt, attention_mask=attention_mask, t=t, output_index=index)  # [N, V], <mask> logit -inf
    targets = x0.flatten().index_select(0, index)
    weights = objective.schedule.weight(t).index_select(0, torch.div(index, x0.shape[1], rounding_mode="floor"))
    ce, predicted = cross_entropy_rows(logits, targets, kernels)
    valid = None
    if n_valid is not None:
        valid = torch.arange(index.shape[0], device=index.device) < n_valid
        weights = torch.where(valid, weights, 0.0)
    loss = (weights * ce).sum() / normalizer
    with torch.no_grad():
        hits = predicted == targets
        if valid is None:
            ce_sum = ce.detach().sum()
            correct = hits.sum()
        else:
            ce_sum = torch.where(valid, ce.detach(), 0.0).sum()
            correct = (hits & valid).sum()
    return loss, ce_sum, correct


class CompiledMaskedLoss:
    """Drop-in for `objective(model, batch, generator, normalizer)` with masked-only logits."""

    def __init__(self, objective: MDLMObjective, model: nn.Module, compile: bool = True,
                 kernels: KernelPolicy = PYTORCH):
        if not objective.masked_only_logits:
            raise ValueError("CompiledMaskedLoss computes logits at masked positions only (masked_only_logits)")
        self.objective, self.model, self.kernels = objective, model, kernels
        # antithetic times bound the masked count, so the sync-free static-capacity selection applies
        self.static_shapes = objective.antithetic
        self._capacity: dict[tuple[int, int], int] = {}

        def loss_fn(xt: torch.Tensor, x0: torch.Tensor, attention_mask: torch.Tensor | None, t: torch.Tensor,
                    index: torch.Tensor, normalizer: torch.Tensor,
                    n_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
            return _masked_loss(self.model, self.objective, self.kernels, xt, x0, attention_mask, t, index,
                                normalizer, n_valid)

        self.compiled = compile
        self.loss_fn: Callable[..., tuple[torch.Tensor, ...]] = torch.compile(loss_fn) if compile else loss_fn

    def capacity(self, batch_size: int, length: int) -> int:
        """Rows sent through the head for a [batch_size, length] batch on the static path."""
        key = (batch_size, length)
        if key not in self._capacity:
            obj = self.objective
            self._capacity[key] = static_capacity(obj.schedule.mask_prob, batch_size, length, obj.eps)
        return self._capacity[key]

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
        if normalizer is None:
            normalizer = real.sum().clamp_min(1)
        if not isinstance(normalizer, torch.Tensor):  # a fill kernel, not a blocking host-to-device copy
            normalizer = torch.full((), float(normalizer), device=x0.device)
        if self.static_shapes:
            cap = self.capacity(*x0.shape)
            index = torch.nonzero_static(masked.flatten(), size=cap, fill_value=0).squeeze(1)
            loss, ce_sum, correct = self.loss_fn(xt, x0, attention_mask, t, index, normalizer, n_masked)
            dropped = (n_masked - cap).clamp_min(0)
        else:
            index = masked.flatten().nonzero().squeeze(1)  # host sync: the masked count sizes the head
            if self.compiled:  # one graph for every masked count, instead of a recompile on the second one
                torch._dynamo.maybe_mark_dynamic(index, 0)
            loss, ce_sum, correct = self.loss_fn(xt, x0, attention_mask, t, index, normalizer)
            dropped = torch.zeros_like(n_masked)
        denom = n_masked.clamp_min(1)
        metrics = {
            "masked_ce": ce_sum / denom,
            "masked_acc": correct / denom,
            "mask_fraction": n_masked / normalizer,
            "num_masked": n_masked,
            "num_dropped": dropped,  # masked positions beyond the static capacity, not scored (see module doc)
        }
        return loss, metrics
