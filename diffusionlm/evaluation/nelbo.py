"""The MDLM NELBO of held-out sequences, by Monte Carlo over diffusion times, accumulated in float64.

For a sequence x of n real tokens the continuous-time bound (MDLM, Sahoo et al. 2024) is
    -log p(x) <= NELBO(x) = E_{t ~ U[eps, 1]} E_{x_t ~ q(.|x, t)} [ w(t) sum_{i masked in x_t} -log p(x_i | x_t) ],
the quantity the training loss estimates with one t per sequence (times are drawn from [eps, 1] exactly as in
training, so eval and `val.nelbo` target the same number; eps -> 0 gives the integral over [0, 1], and with the
default eps = 1e-3 the two differ by well under 0.1%). Here each sequence gets K times, stratified:
t_k = eps + (1 - eps) (k + u) / K, k = 0..K-1, with one uniform u per sequence (or K independent draws), and one
independent masking per time. The per-sequence estimate is the mean over k, unbiased for NELBO(x) with a variance
that falls faster than 1/K for smooth integrands. Per-token figures divide summed NELBOs by summed real tokens
(stats.py gives the interval from the per-sequence spread, which includes the Monte-Carlo noise).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffusionlm.diffusion import NoiseSchedule, forward_mask


def stratified_times(batch_size: int, k: int, eps: float, stratified: bool, generator: torch.Generator | None,
                     device: torch.device) -> torch.Tensor:
    """float64 [K, B] times in [eps, 1]: row k holds every sequence's k-th time."""
    if stratified:
        u = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
        strata = torch.arange(k, device=device, dtype=torch.float64)[:, None]
        v = (strata + u[None, :]) / k
    else:
        v = torch.rand(k, batch_size, generator=generator, device=device, dtype=torch.float64)
    return eps + (1.0 - eps) * v


@torch.no_grad()
def nelbo_per_sequence(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       schedule: NoiseSchedule, mask_token_id: int, k: int, eps: float,
                       generator: torch.Generator | None = None, stratified: bool = True,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(NELBO estimate, real tokens), float64 [B] each: the K-time Monte-Carlo NELBO of every row, in nats.

    One forward pass per time; the head runs only at the masked positions. Per-token CEs are fp32 (log-softmax of
    fp32 logits); everything summed over tokens or times is float64.
    """
    if k < 1:
        raise ValueError(f"K must be at least 1, got {k}")
    B = input_ids.shape[0]
    device = input_ids.device
    real = attention_mask if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    times = stratified_times(B, k, eps, stratified, generator, device)
    total = torch.zeros(B, dtype=torch.float64, device=device)
    for t in times:
        masked = forward_mask(input_ids, schedule.mask_prob(t), real, generator)
        rows = masked.nonzero()[:, 0]
        if rows.numel() == 0:
            continue
        xt = torch.where(masked, mask_token_id, input_ids)
        logits = model(xt, attention_mask=attention_mask, t=t.float(), output_mask=masked)  # [N, V]
        ce = F.cross_entropy(logits.float(), input_ids[masked], reduction="none")
        total.index_add_(0, rows, ce.double() * schedule.weight(t)[rows])
    return total / k, real.sum(-1, dtype=torch.float64)
