"""The block diffusion (BD3-LM, Arriola et al. 2025) training objective.

A row x_0 of length L is split into blocks of `block_size` tokens. Each block of each row draws its own
diffusion time t (stratified over all batch x blocks draws when antithetic) and masks its real tokens with
probability p(t). One network call on x_t ⊕ x_0 (length 2L) with `block_mask` (block_mask.py) scores every
block given the clean blocks before it; both halves take rotary positions 0..L-1, so noisy and clean copies of
a token sit at the same position. The loss is

    sum_{masked i} w(t_block(i)) * CE_i / normalizer,

the normalizer being the real-token count, as in MDLM (mdlm.py). With block_size = L this is MDLM's loss: the
single noisy block cannot see the clean half.

There is one path, the reference (`__call__`); no compiled masked-rows path. The model needs no time
conditioning (the config refuses adaLN, which takes one time per row).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from config.model import ModelConfig
from config.objective import BD3LMConfig
from diffusionlm.diffusion.block_mask import block_mask
from diffusionlm.diffusion.mdlm import weighted_ce_loss
from diffusionlm.diffusion.noise import sample_times
from diffusionlm.diffusion.schedules import NoiseSchedule, get_schedule
from diffusionlm.ops import KernelPolicy

LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def block_times(batch_size: int, num_blocks: int, window: tuple[float, float], antithetic: bool,
                generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """t [B, num_blocks], uniform in [lo, hi] = `window`. Antithetic: one offset, B * num_blocks evenly spaced
    strata in row-major order, so both the batch and the blocks of a row spread over the window."""
    lo, hi = window
    u = sample_times(batch_size * num_blocks, 0.0, antithetic, generator, device)  # eps = 0: u itself, in [0, 1)
    return (lo + (hi - lo) * u).view(batch_size, num_blocks)


@dataclass
class BD3LMObjective:
    schedule: NoiseSchedule
    mask_token_id: int
    pad_token_id: int
    block_size: int
    window: tuple[float, float] = (1e-3, 1.0)
    antithetic: bool = True

    @classmethod
    def from_config(cls, cfg: BD3LMConfig, model_cfg: ModelConfig) -> BD3LMObjective:
        return cls(get_schedule(cfg.schedule), model_cfg.mask_token_id, model_cfg.pad_token_id, cfg.block_size,
                   cfg.time_window(), cfg.antithetic)

    def training_loss(self, model: nn.Module, device: torch.device, compile: bool = False,
                      kernels: KernelPolicy | None = None) -> LossFn:
        """The reference on `model` (compiled with torch.compile when asked), called as
        `loss(batch, generator, normalizer)`."""
        return functools.partial(self, torch.compile(model) if compile else model)

    def real_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch.get("attention_mask")
        return mask if mask is not None else torch.ones_like(batch["input_ids"], dtype=torch.bool)

    def per_token(self, t: torch.Tensor) -> torch.Tensor:
        """[B, num_blocks] block times -> [B, L], each token's block's time."""
        return t.repeat_interleave(self.block_size, dim=1)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                 normalizer: torch.Tensor | float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0 = batch["input_ids"]
        B, L = x0.shape
        if L % self.block_size:
            raise ValueError(f"rows of {L} tokens are not a whole number of blocks of {self.block_size}")
        t = block_times(B, L // self.block_size, self.window, self.antithetic, generator, x0.device)
        draws = torch.rand(x0.shape, generator=generator, device=x0.device)
        masked = (draws < self.schedule.mask_prob(self.per_token(t))) & self.real_tokens(batch)
        return self.loss_at(model, x0, batch.get("attention_mask"), t, masked, normalizer)

    def loss_at(self, model: nn.Module, x0: torch.Tensor, attention_mask: torch.Tensor | None, t: torch.Tensor,
                masked: torch.Tensor, normalizer: torch.Tensor | float | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss for given block times t [B, L / block_size] and masks [B, L]: the deterministic part."""
        L = x0.shape[1]
        xt = torch.where(masked, self.mask_token_id, x0)
        pair_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask], dim=1)
        # the head runs at the noisy half's masked positions only; the clean half is context
        output_mask = torch.cat([masked, torch.zeros_like(masked)], dim=1)
        positions = torch.arange(L, device=x0.device).repeat(2)
        logits = model(torch.cat([xt, x0], dim=1), attention_mask=pair_mask, output_mask=output_mask,
                       attn_mask=block_mask(L, self.block_size, x0.device), position_ids=positions)  # [N, V]
        targets = x0[masked]
        weights = self.schedule.weight(self.per_token(t))[masked]
        return weighted_ce_loss(logits, targets, weights, masked, attention_mask, normalizer)


def build_bd3lm(cfg: BD3LMConfig, model_cfg: ModelConfig) -> BD3LMObjective:
    """The registry's builder for the objective "bd3lm" (the config already ran `cfg.check_model`)."""
    cfg.check_model(model_cfg)
    return BD3LMObjective.from_config(cfg, model_cfg)
