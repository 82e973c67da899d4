"""The MDLM loss as one compiled graph, for accelerators.

`MDLMObjective` selects masked positions with a bool mask: each `x[mask]` is a data-dependent shape, which
breaks a torch.compile graph in two and leaves the fp32 cross-entropy over [N, V] logits to eager kernels
(the logits are written in bf16, read, upcast and written again in fp32, and the same again backwards).
`CompiledMaskedLoss` computes the same function: it draws times and masks exactly as the objective does
(same generator calls, same order), turns the mask into flat indices, then runs body, head on the masked
rows, fp32 cross-entropy and the weighted sum in a single graph: the logits stay bf16 in memory, the
forward statistics take one read of them (`diffusionlm.ops.row_cross_entropy`) and the compiler fuses the
upcast and the softmax into the gradient's one pass.

With antithetic times the number of masked positions has a tight upper bound (`static_capacity`), so the
indices come from `torch.nonzero_static` padded to that bound: no host sync, one static shape. Padded rows
carry weight 0 and are left out of every metric. A count above the bound is reported as `num_dropped`
(the trainer then skips the update and says so) rather than silently scoring fewer tokens. Without
antithetic times the exact `nonzero` (one host sync, dynamic shapes) is used.

`DeferredStats` lets the trainer read a step's statistics one step late on CUDA, so that the GPU never
drains between steps (see Trainer._train_step).

The CPU path of the trainer keeps `MDLMObjective` (bit-identical resume tests depend on its exact kernels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn

from diffusionlm.diffusion.mdlm import MDLMObjective, forward_mask, sample_times
from diffusionlm.ops import row_cross_entropy


class _RowCrossEntropy(torch.autograd.Function):
    """Per-row fp32 cross-entropy, logsumexp(z) - z[target], with the gradient softmax(z) - onehot(target).

    F.cross_entropy's function and gradient, written out so that only the low-precision logits and one
    fp32 logsumexp per row are kept for backward, and the logits' gradient is computed in one pass (the
    log-softmax form writes and re-reads a full fp32 [N, V] tensor; autograd of a gather scatters into a
    zero-filled fp32 [N, V] one). The forward is one read of the logits (`ops.row_cross_entropy`), which
    also yields each row's argmax for the accuracy metric.
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
    """(fp32 cross-entropy, argmax) of each row of `logits` [N, V] against `targets` [N] (no reduction)."""
    return _RowCrossEntropy.apply(logits, targets)


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


def _masked_loss(model: nn.Module, objective: MDLMObjective, xt: torch.Tensor, x0: torch.Tensor,
                 attention_mask: torch.Tensor | None, t: torch.Tensor, index: torch.Tensor,
                 normalizer: torch.Tensor, n_valid: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, sum of masked CE, number of correct argmax predictions) for the masked flat positions `index`.

    n_valid: with a padded (static-size) `index`, only its first n_valid rows are masked positions.
    """
    logits = model(xt, attention_mask=attention_mask, t=t, output_index=index)  # [N, V], <mask> logit -inf
    targets = x0.flatten().index_select(0, index)
    weights = objective.schedule.weight(t).index_select(0, torch.div(index, x0.shape[1], rounding_mode="floor"))
    ce, predicted = cross_entropy_rows(logits, targets)
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
                 static_shapes: bool | None = None):
        """static_shapes: sync-free static-capacity selection (default: whenever times are antithetic)."""
        if not objective.masked_only_logits:
            raise ValueError("CompiledMaskedLoss computes logits at masked positions only (masked_only_logits)")
        self.objective, self.model = objective, model
        self.static_shapes = objective.antithetic if static_shapes is None else static_shapes
        if self.static_shapes and not objective.antithetic:
            raise ValueError("static_shapes needs antithetic times (diffusion.antithetic) for its capacity bound")
        self._capacity: dict[tuple[int, int], int] = {}

        def loss_fn(xt: torch.Tensor, x0: torch.Tensor, attention_mask: torch.Tensor | None, t: torch.Tensor,
                    index: torch.Tensor, normalizer: torch.Tensor,
                    n_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
            return _masked_loss(self.model, self.objective, xt, x0, attention_mask, t, index, normalizer, n_valid)

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


STAT_NAMES = ("loss", "masked_ce", "masked_acc", "grad_l2_norm", "tokens", "dropped", "skipped", "stop")


class DeferredStats(Mapping[str, float]):
    """One optimizer step's statistics, copied to pinned host memory without blocking; read on first access.

    `values` is a device vector in the order of STAT_NAMES. Reading waits for this step's copy only (an
    event), not for work queued after it, so a trainer can queue the next step before it reads this one.
    """

    def __init__(self, values: torch.Tensor, step: int, data_wait_s: float):
        self.step, self.settled = step, False
        self._host = torch.empty(values.shape, dtype=torch.float64, pin_memory=values.is_cuda)
        self._host.copy_(values.double(), non_blocking=True)
        self._event = torch.cuda.Event() if values.is_cuda else None
        if self._event is not None:
            self._event.record()
        self._data_wait_s = data_wait_s
        self._values: dict[str, float] | None = None
        self._stop = False

    @property
    def ready(self) -> bool:
        return self._values is not None or self._event is None or self._event.query()

    def _resolve(self) -> dict[str, float]:
        if self._values is None:
            if self._event is not None:
                self._event.synchronize()
            raw = dict(zip(STAT_NAMES, self._host.tolist()))
            self._values = {f"metrics.{k}": raw[k] for k in ("loss", "masked_ce", "masked_acc", "grad_l2_norm",
                                                            "tokens")}
            self._values["metrics.data_wait_s"] = self._data_wait_s
            self._values["metrics.skipped_step"] = raw["skipped"]
            self._values["metrics.dropped_masked"] = raw["dropped"]
            self._stop = raw["stop"] > 0
        return self._values

    @property
    def stop_requested(self) -> bool:
        """Some rank had received a stop signal when this step was queued."""
        self._resolve()
        return self._stop

    def __getitem__(self, key: str) -> float:
        return self._resolve()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __len__(self) -> int:
        return len(self._resolve())
