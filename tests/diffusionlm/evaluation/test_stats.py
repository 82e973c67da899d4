"""Per-sequence float64 accumulation, the ratio estimate and its interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusionlm.evaluation import PerSequence, TokenCounts, rate_estimate


def test_rate_estimate_matches_the_delta_method_by_hand() -> None:
    y = torch.tensor([10.0, 14.0, 9.0, 20.0], dtype=torch.float64)
    n = torch.tensor([4.0, 5.0, 3.0, 8.0], dtype=torch.float64)
    est = rate_estimate(y, n)
    rate = 53.0 / 20.0
    resid = [yi - rate * ni for yi, ni in zip(y.tolist(), n.tolist())]
    se = math.sqrt(sum(r * r for r in resid) / (4 * 3)) / (20.0 / 4)
    assert est.nats_per_token == pytest.approx(rate, rel=1e-15) and est.se == pytest.approx(se, rel=1e-12)
    lo, hi = est.ci95
    assert lo == pytest.approx(rate - 1.959963984540054 * se) and hi == pytest.approx(rate + 1.959963984540054 * se)
    d = est.as_dict("perplexity_bound")
    assert d["bits_per_token"] == pytest.approx(rate / math.log(2)) and d["perplexity_bound"] == pytest.approx(
        math.exp(rate))
    assert d["ci95_perplexity_bound"] == pytest.approx([math.exp(lo), math.exp(hi)]) and d["tokens"] == 20


def test_equal_lengths_give_the_standard_error_of_the_per_sequence_means() -> None:
    per_token = torch.tensor([1.0, 2.0, 4.0, 3.5, 2.5], dtype=torch.float64)
    est = rate_estimate(per_token * 7, torch.full((5,), 7.0, dtype=torch.float64))
    assert est.se == pytest.approx(float(per_token.std() / math.sqrt(5)), rel=1e-12)


def test_one_sequence_has_no_interval_and_empty_rows_are_left_out() -> None:
    acc = PerSequence()
    acc.add(torch.tensor([3.0, 0.0], dtype=torch.float64), torch.tensor([2.0, 0.0], dtype=torch.float64))
    est = acc.estimate()
    assert est.sequences == 1 and est.nats_per_token == 1.5 and est.ci95 is None
    assert est.as_dict()["ci95_nats"] is None and PerSequence().estimate().sequences == 0


def test_per_sequence_totals_must_be_float64() -> None:
    with pytest.raises(TypeError, match="float64"):
        PerSequence().add(torch.ones(3), torch.ones(3))


def test_sums_over_many_tokens_are_float64_not_fp32() -> None:
    """Two million per-token CEs of an fp32 value, added batch by batch: the totals are exact to float64, where an
    fp32 running sum is visibly off (so the check can fail)."""
    value = torch.tensor(1.0 / 3.0, dtype=torch.float32)
    exact_total = float(value) * 2_000 * 1_000
    counts, seqs = TokenCounts(), PerSequence()
    fp32_total = torch.zeros((), dtype=torch.float32)
    for _ in range(2_000):
        ce = value.expand(1_000)
        counts.add(ce, torch.ones(1_000, dtype=torch.bool))
        seqs.add(torch.full((4,), float(ce.double().sum()) / 4, dtype=torch.float64),
                 torch.full((4,), 250.0, dtype=torch.float64))
        fp32_total += ce.sum()
    assert counts.ce == pytest.approx(exact_total, rel=1e-13) and counts.tokens == 2_000_000
    assert seqs.estimate().nats_per_token == pytest.approx(float(value), rel=1e-13)
    assert abs(float(fp32_total) - exact_total) / exact_total > 1e-7, "an fp32 running sum would have drifted"
    assert np.float64(counts.as_dict()["ce_nats"]) == pytest.approx(float(value), rel=1e-13)
