"""Masked-token accuracy and CE at fixed mask rates: how well a masked model fills in blanks at a known difficulty.

Unlike the NELBO, which averages over all noise levels with the ELBO weight, this reads the model at one rate r
(0.15 is BERT's, 0.5 the middle, 0.85 nearly unconditional generation). `exact` masks round(r * n) of a row's n
real tokens (at least one), chosen uniformly, so every row has the same difficulty; `independent` masks each real
token with probability r, the forward process itself. A time-conditioned model is told the time whose mask
probability is r under its schedule (the inverse found by bisection, since schedules only give p(t)).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffusionlm.diffusion import NoiseSchedule, forward_mask
from diffusionlm.evaluation.stats import TokenCounts


def time_for_rate(schedule: NoiseSchedule, rate: float, iterations: int = 60) -> float:
    """The t in (0, 1] with schedule.mask_prob(t) = rate (mask_prob increases in t); float64 bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if float(schedule.mask_prob(torch.tensor(mid, dtype=torch.float64))) < rate:
            lo = mid
        else:
            hi = mid
    return hi


def fixed_rate_mask(real: torch.Tensor, rate: float, mode: str, generator: torch.Generator | None) -> torch.Tensor:
    """Bool [B, T]: the positions masked at `rate` (`exact` or `independent`, module docstring); pads never."""
    if mode == "independent":
        prob = torch.full((real.shape[0],), rate, dtype=torch.float64, device=real.device)
        return forward_mask(real.long(), prob, real, generator)
    if mode != "exact":
        raise ValueError(f"unknown mask mode {mode!r} (exact | independent)")
    n_real = real.sum(-1)
    n_mask = torch.where(n_real > 0, (n_real.double() * rate).round().long().clamp_min(1), 0)
    scores = torch.rand(real.shape, generator=generator, device=real.device).masked_fill(~real, 2.0)
    rank = scores.argsort(-1).argsort(-1)  # a uniformly random order of the real tokens, pads last
    return rank < n_mask[:, None]


@torch.no_grad()
def masked_accuracy(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    schedule: NoiseSchedule, mask_token_id: int, rate: float, mode: str,
                    counts: TokenCounts, generator: torch.Generator | None = None) -> None:
    """Mask a batch at `rate`, predict the masked tokens (argmax), add CE and hits to `counts` (float64)."""
    real = attention_mask if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    masked = fixed_rate_mask(real, rate, mode, generator)
    if not masked.any():
        return
    t = torch.full((input_ids.shape[0],), time_for_rate(schedule, rate), device=input_ids.device)
    xt = torch.where(masked, mask_token_id, input_ids)
    logits = model(xt, attention_mask=attention_mask, t=t, output_mask=masked).float()
    targets = input_ids[masked]
    counts.add(F.cross_entropy(logits, targets, reduction="none"), logits.argmax(-1) == targets)
