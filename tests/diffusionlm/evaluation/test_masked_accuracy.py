"""Masked-token accuracy at fixed rates: exact counts, the schedule's time for a rate, float64 tallies."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from diffusionlm.diffusion import get_schedule
from diffusionlm.evaluation import TokenCounts, fixed_rate_mask, masked_accuracy, time_for_rate

MASK = 3


class Oracle(nn.Module):
    """Knows the clean sequence: puts `confidence` logit on the true token of every position."""

    def __init__(self, clean: torch.Tensor, vocab: int = 8, confidence: float = 5.0):
        super().__init__()
        self.clean, self.vocab, self.confidence = clean, vocab, confidence
        self.seen_t: list[torch.Tensor] = []

    def forward(self, input_ids, attention_mask=None, t=None, output_mask=None, output_index=None):
        self.seen_t.append(t)
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits.scatter_(-1, self.clean[..., None], self.confidence)
        logits[..., MASK] = float("-inf")
        return logits[output_mask] if output_mask is not None else logits


@pytest.mark.parametrize("name", ["loglinear", "linear", "cosine"])
def test_time_for_rate_inverts_the_schedule(name: str) -> None:
    schedule = get_schedule(name)
    for rate in (0.15, 0.5, 0.85):
        t = time_for_rate(schedule, rate)
        assert float(schedule.mask_prob(torch.tensor(t, dtype=torch.float64))) == pytest.approx(rate, abs=1e-12)
    assert time_for_rate(get_schedule("loglinear"), 0.3) == pytest.approx(0.3)


def test_exact_mode_masks_round_rate_times_the_real_tokens_of_each_row() -> None:
    real = torch.ones(4, 20, dtype=torch.bool)
    real[1, 10:] = False
    real[2, 1:] = False
    gen = torch.Generator().manual_seed(0)
    for rate in (0.15, 0.5, 0.85):
        masked = fixed_rate_mask(real, rate, "exact", gen)
        assert not (masked & ~real).any(), "padding is never masked"
        assert masked.sum(-1).tolist() == [round(20 * rate), round(10 * rate), 1, round(20 * rate)]


def test_independent_mode_masks_each_token_with_the_rate() -> None:
    real = torch.ones(200, 100, dtype=torch.bool)
    masked = fixed_rate_mask(real, 0.3, "independent", torch.Generator().manual_seed(0))
    assert float(masked.double().mean()) == pytest.approx(0.3, abs=0.005)
    with pytest.raises(ValueError, match="mask mode"):
        fixed_rate_mask(real, 0.3, "sometimes", None)


def test_accuracy_and_ce_of_an_oracle() -> None:
    clean = torch.randint(5, 8, (3, 16), generator=torch.Generator().manual_seed(0))
    model = Oracle(clean)
    counts = TokenCounts()
    masked_accuracy(model, clean, None, get_schedule("cosine"), MASK, 0.5, "exact", counts,
                    torch.Generator().manual_seed(1))
    # the true token has logit 5, six other non-<mask> tokens have 0
    expected_ce = -math.log(math.exp(5) / (math.exp(5) + 6))
    out = counts.as_dict()
    assert out["tokens"] == 3 * 8 and out["accuracy"] == 1.0 and out["ce_nats"] == pytest.approx(expected_ce)
    t = model.seen_t[-1]
    assert torch.allclose(t, torch.full((3,), time_for_rate(get_schedule("cosine"), 0.5), dtype=t.dtype))
    assert TokenCounts().as_dict() == {"accuracy": None, "ce_nats": None, "tokens": 0}
