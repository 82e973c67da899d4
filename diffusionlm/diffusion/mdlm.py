"""The MDLM training objective: sample times, mask tokens, score the masked ones with the ELBO weight.

The loss of a batch is  sum_{masked i} w(t_b) * CE_i / normalizer, where the normalizer is the number of
real (non-pad) tokens. The trainer passes the normalizer computed over all micro-batches and ranks of an
optimizer step, so gradient accumulation and DDP need no rescaling; left unset it is the batch's own count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from config.schema import DiffusionConfig
from diffusionlm.diffusion.schedules import NoiseSchedule, get_schedule


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


@dataclass
class MDLMObjective:
    schedule: NoiseSchedule
    mask_token_id: int
    pad_token_id: int
    eps: float = 1e-3
    antithetic: bool = True
    masked_only_logits: bool = True

    @classmethod
    def from_config(cls, cfg: DiffusionConfig, mask_token_id: int, pad_token_id: int) -> MDLMObjective:
        return cls(get_schedule(cfg.schedule), mask_token_id, pad_token_id, cfg.eps, cfg.antithetic,
                   cfg.masked_only_logits)

    def real_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch.get("attention_mask")
        return mask if mask is not None else torch.ones_like(batch["input_ids"], dtype=torch.bool)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                 normalizer: torch.Tensor | float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0 = batch["input_ids"]
        real = self.real_tokens(batch)
        t = sample_times(x0.shape[0], self.eps, self.antithetic, generator, x0.device)
        masked = forward_mask(x0, self.schedule.mask_prob(t), real, generator)
        return self.loss_at(model, x0, batch.get("attention_mask"), t, masked, normalizer)

    def loss_at(self, model: nn.Module, x0: torch.Tensor, attention_mask: torch.Tensor | None, t: torch.Tensor,
                masked: torch.Tensor, normalizer: torch.Tensor | float | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss for given times and masks: the deterministic part, exposed for tests and evaluation."""
        xt = torch.where(masked, self.mask_token_id, x0)
        if self.masked_only_logits:
            logits = model(xt, attention_mask=attention_mask, t=t, output_mask=masked)  # [N, V]
            targets = x0[masked]
            weights = self.schedule.weight(t)[:, None].expand_as(masked)[masked]
        else:
            logits = model(xt, attention_mask=attention_mask, t=t)
            logits, targets = logits.flatten(0, 1), x0.flatten()
            weights = (self.schedule.weight(t)[:, None] * masked).flatten()
        ce = F.cross_entropy(logits.float(), targets, reduction="none")  # fp32 log-softmax
        if normalizer is None:
            real = attention_mask if attention_mask is not None else torch.ones_like(masked)
            normalizer = real.sum().clamp_min(1)
        loss = (weights * ce).sum() / normalizer
        with torch.no_grad():
            n_masked = masked.sum()
            counted = masked.flatten() if not self.masked_only_logits else torch.ones_like(ce, dtype=torch.bool)
            masked_ce = (ce * counted).sum() / n_masked.clamp_min(1)
            correct = ((logits.argmax(-1) == targets) & counted).sum()
            metrics = {
                "masked_ce": masked_ce,
                "masked_acc": correct / n_masked.clamp_min(1),
                "mask_fraction": n_masked / normalizer if isinstance(normalizer, torch.Tensor)
                else n_masked / float(normalizer),
                "num_masked": n_masked,
            }
        return loss, metrics
