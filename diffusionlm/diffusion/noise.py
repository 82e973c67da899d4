"""The forward process's random draws: diffusion times and which tokens they mask."""

from __future__ import annotations

import torch


def sample_times(batch_size: int, eps: float, antithetic: bool, generator: torch.Generator | None,
                 device: torch.device) -> torch.Tensor:
    """t in [eps, 1]. Antithetic: one uniform offset, evenly spaced strata, lower variance than iid."""
    if antithetic:
        u = torch.rand(1, generator=generator, device=device)
        u = (u + torch.arange(batch_size, device=device) / batch_size) % 1.0
    else:
        u = torch.rand(batch_size, generator=generator, device=device)
    return eps + (1.0 - eps) * u


def forward_mask(input_ids: torch.Tensor, mask_prob: torch.Tensor, real: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Bool [B, T]: which tokens the forward process masks. Padding is never masked."""
    draws = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    return (draws < mask_prob[:, None]) & real
