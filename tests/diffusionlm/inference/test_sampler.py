"""Iterative unmasking: every mask is filled, the prompt is kept, the mask token is never produced."""

from __future__ import annotations

import pytest
import torch

from config import load_config
from diffusionlm.inference import generate, tokens_per_step
from diffusionlm.models import DiffusionTransformer


def test_tokens_per_step_spreads_evenly() -> None:
    assert tokens_per_step(10, 4) == [3, 3, 2, 2]
    assert tokens_per_step(3, 8) == [1, 1, 1]
    assert sum(tokens_per_step(257, 64)) == 257


@pytest.mark.parametrize("strategy", ["low_confidence", "random"])
def test_generate_fills_everything_and_keeps_prompt(strategy: str) -> None:
    cfg = load_config(None, ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.vocab_size=40",
                             "tokenizer.vocab_size=40", "model.context_length=24", "inference.total_length=24"])
    torch.manual_seed(0)
    model = DiffusionTransformer(cfg.model).eval()
    prompt = torch.tensor([[7, 8, 9], [10, 11, 12]])
    seen = []
    out = generate(model, prompt, 24, mask_token_id=3, steps=7, strategy=strategy,
                   generator=torch.Generator().manual_seed(0), on_step=lambda i, x: seen.append((x == 3).sum().item()))
    assert out.shape == (2, 24)
    assert (out != 3).all()
    assert torch.equal(out[:, :3], prompt)
    assert seen == sorted(seen, reverse=True) and seen[-1] == 0 and len(seen) == 7
    again = generate(model, prompt, 24, mask_token_id=3, steps=7, strategy=strategy,
                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again), "same seed, same text"


def test_generate_rejects_bad_arguments() -> None:
    cfg = load_config(None, ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.vocab_size=40",
                             "tokenizer.vocab_size=40", "model.context_length=24", "inference.total_length=24"])
    model = DiffusionTransformer(cfg.model).eval()
    with pytest.raises(ValueError, match="strategy"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 8, 3, strategy="best")
    with pytest.raises(ValueError, match="more than total_length"):
        generate(model, torch.ones(1, 9, dtype=torch.long), 8, 3)
