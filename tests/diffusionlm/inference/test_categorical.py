"""Drawing tokens: top-k, top-p on hand-made distributions; float64 Gumbel-max draws match softmax(logits / T),
rare tokens included."""

from __future__ import annotations

import math

import pytest
import torch

from diffusionlm.inference.categorical import (
    forbid,
    gumbel_argmax,
    sample_tokens,
    sampling_logits,
    top_k_filter,
    top_p_filter,
)
from diffusionlm.inference.streams import TOKENS, RowStreams

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)


def _kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits).nonzero().flatten().tolist()


@pytest.mark.parametrize(("p", "kept"), [(0.45, [0]), (0.55, [0, 1]), (0.79, [0, 1]), (0.81, [0, 1, 2]),
                                         (0.9, [0, 1, 2]), (0.96, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3])])
def test_top_p_keeps_the_smallest_set_reaching_p(p: float, kept: list[int]) -> None:
    order = torch.tensor([2, 0, 3, 1])  # shuffled, so the filter must sort
    logits = PROBS.log()[order]
    assert sorted(order[_kept(top_p_filter(logits, p))].tolist()) == kept
    batched = top_p_filter(torch.stack([logits, logits.flip(0)]), p)  # row by row
    assert sorted(order[_kept(batched[0])].tolist()) == kept
    assert sorted(order.flip(0)[_kept(batched[1])].tolist()) == kept


def test_top_k_keeps_exactly_k() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 3.0, -2.0]], dtype=torch.float64)
    assert _kept(top_k_filter(logits, 2)[0]) == [1, 2] or _kept(top_k_filter(logits, 2)[0]) == [1, 3]
    assert _kept(top_k_filter(logits, 1)[0]) == [1]
    assert torch.equal(top_k_filter(logits, 0), logits) and torch.equal(top_k_filter(logits, 9), logits)


def test_forbidden_ids_become_minus_inf_in_float64() -> None:
    out = forbid(torch.zeros(2, 6, dtype=torch.bfloat16), [0, 3])
    assert out.dtype == torch.float64
    assert torch.isinf(out[:, [0, 3]]).all() and torch.isfinite(out[:, [1, 2, 4, 5]]).all()


def test_temperature_zero_is_argmax_and_ignores_the_noise() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]], dtype=torch.float64)
    u = torch.rand(2, 3, dtype=torch.float64)
    assert sample_tokens(logits, 0.0, 0, 1.0, u).tolist() == [1, 0]
    assert sample_tokens(logits, 1.0, 1, 1.0, u).tolist() == [1, 0]  # top-k = 1 is greedy too
    assert gumbel_argmax(logits, None).tolist() == [1, 0]


def test_float64_gumbel_draws_follow_softmax_over_the_temperature() -> None:
    # One rare token (p ~ 1e-4 after the temperature) among three common ones; 10^6 draws from one row's stream.
    temperature = 0.8
    want = torch.tensor([0.6, 0.25, 0.1499, 1e-4], dtype=torch.float64)
    logits = want.log() * temperature  # so that softmax(logits / T) = want
    n = 1_000_000
    u = RowStreams(seed=1234, batch_size=1).uniform(0, TOKENS, torch.arange(n), 4)[0]
    draws = sample_tokens(logits.expand(n, -1), temperature, 0, 1.0, u)
    counts = torch.bincount(draws, minlength=4).double()
    expected = want / want.sum() * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27, (chi2, counts.tolist())  # chi-square, 3 degrees of freedom, p = 0.001
    rare = float(counts[3])
    assert abs(rare - float(expected[3])) < 4 * math.sqrt(float(expected[3])), rare  # ~100 +- 40


def test_sampling_logits_apply_temperature_then_filters() -> None:
    logits = PROBS.log()
    out = sampling_logits(logits, 0.5, top_k=3, top_p=1.0)
    assert torch.allclose(out[:3], logits[:3] / 0.5) and torch.isinf(out[3])
