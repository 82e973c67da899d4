"""The module every exported graph is made of: one denoising call of a model family at a static shape.

A family's forward has optional keywords (padding masks, output selections) that an edge runtime never uses and
that would turn into graph branches or dynamic shapes; `Denoiser` keeps only what one denoising step needs, so the
exported graph has fixed input and output shapes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from config.model import ModelConfig


def time_conditioned(model_cfg: ModelConfig) -> bool:
    """Whether the family's forward needs the diffusion time `t` (adaLN conditioning)."""
    return getattr(model_cfg, "time_conditioning", "none") == "adaln"


class Denoiser(nn.Module):
    """`input_ids` int64 [B, T] (and, for time-conditioned models, `t` float32 [B]) -> logits float32 [B, T, V],
    the `<mask>` logit at -inf; the family's forward without a padding mask or output selection."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids, t=t)


def sample_inputs(model_cfg: ModelConfig, batch: int, length: int, seed: int, mask_rate: float = 0.3,
                  ) -> dict[str, torch.Tensor]:
    """A reproducible denoiser input, keyed by graph input name in the order the graphs take them: ordinary tokens
    with about `mask_rate` of the positions (at least one per row) set to `<mask>`, as mid-way through sampling,
    plus diffusion times `t` in (0, 1) where the model takes them.

    Special ids other than `<mask>` are left out because they never appear mid-sequence in data."""
    g = torch.Generator().manual_seed(seed)
    specials = {model_cfg.pad_token_id, model_cfg.bos_token_id, model_cfg.eos_token_id, model_cfg.mask_token_id,
                model_cfg.unk_token_id}
    ordinary = torch.tensor([i for i in range(model_cfg.vocab_size) if i not in specials], dtype=torch.int64)
    ids = ordinary[torch.randint(len(ordinary), (batch, length), generator=g)]
    masked = torch.rand(batch, length, generator=g) < mask_rate
    masked[torch.arange(batch), torch.randint(length, (batch,), generator=g)] = True
    ids[masked] = model_cfg.mask_token_id
    inputs = {"input_ids": ids}
    if time_conditioned(model_cfg):
        inputs["t"] = torch.rand(batch, generator=g) * 0.98 + 0.01
    return inputs
