"""Models for the sampler tests: a tiny random transformer, and toys following the family contract whose logits
the test controls."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from config import load_config
from config.model import ModelConfig
from diffusionlm.models import build_model

VOCAB, CONTEXT = 40, 32
MASK, PAD, EOS = 3, 0, 2


def model_config(vocab: int = VOCAB, context: int = CONTEXT, *extra: str) -> ModelConfig:
    return load_config(None, [f"model.vocab_size={vocab}", f"tokenizer.vocab_size={vocab}",
                              f"model.context_length={context}", "model.d_model=32", "model.n_layers=1",
                              "model.n_heads=2", *extra], environ={}).model


def tiny_transformer(seed: int = 0, *extra: str) -> tuple[nn.Module, ModelConfig]:
    cfg = model_config(VOCAB, CONTEXT, *extra)
    torch.manual_seed(seed)
    return build_model(cfg).eval(), cfg


class ToyModel(nn.Module):
    """logits[b, i] = fn(input_ids)[b, i]; the `<mask>` logit is -inf, as the family contract says."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], mask_id: int = MASK):
        super().__init__()
        self.fn, self.mask_id = fn, mask_id
        self.anchor = nn.Parameter(torch.zeros(1))  # a device to be on
        self.calls = 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                t: torch.Tensor | None = None, output_index: torch.Tensor | None = None,
                output_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        logits = self.fn(input_ids).float().clone()
        logits[..., self.mask_id] = float("-inf")
        if output_mask is not None:
            return logits[output_mask]
        if output_index is not None:
            return logits.flatten(0, 1)[output_index]
        return logits


def table_model(table: torch.Tensor) -> ToyModel:
    """Logits that depend on the position only: table [T, V]."""
    return ToyModel(lambda ids: table[: ids.shape[1]].expand(ids.shape[0], -1, -1))


class Counting(nn.Module):
    """Counts the calls of a wrapped model."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        return self.inner(*args, **kwargs)
