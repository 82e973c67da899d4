"""The parity comparison on hand-made logits: -inf at `<mask>`, clamped -inf, overflow, argmax agreement, gates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from diffusionlm.export.parity import ParityError, agrees, compare, within_tolerance

MASK = 3


def _logits(seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(seed))
    x[..., MASK] = float("-inf")
    return x


def test_identical_logits_with_a_masked_column() -> None:
    ref = _logits()
    c = compare(ref, ref.clone())
    assert (c.max_abs_diff, c.argmax_agreement, c.finite_ok, c.masked_ok) == (0.0, 1.0, True, True)
    assert c.masked_logit == -math.inf and c.record()["masked_logit"] == "-inf"
    assert within_tolerance(c, 1e-6) and agrees(c, 1.0)


def test_a_runtime_may_clamp_minus_inf_but_not_lose_it() -> None:
    ref = _logits()
    clamped = ref.clone()
    clamped[..., MASK] = -65504.0  # fp16's lowest
    assert compare(ref, clamped.numpy()).masked_ok
    lost = ref.clone()
    lost[..., MASK] = 0.0
    c = compare(ref, lost)
    assert not c.masked_ok and c.masked_logit == 0.0 and not within_tolerance(c, 1.0)


def test_overflow_fails_both_gates_and_serialises() -> None:
    ref = _logits()
    bad = ref.clone()
    bad[0, 0, 0] = float("inf")
    bad[1, 1, MASK] = float("nan")
    c = compare(ref, bad)
    assert not c.finite_ok and c.max_abs_diff == math.inf and not c.masked_ok and math.isnan(c.masked_logit)
    assert not within_tolerance(c, 1e9) and not agrees(c, 0.0)
    assert json.loads(json.dumps(c.record()))["max_abs_diff"] == "inf"


def test_argmax_agreement_counts_positions() -> None:
    ref = _logits()
    cand = ref.clone()
    top = ref.argmax(-1)
    cand[0, 0, top[0, 0]] = -100.0  # one of ten positions changes its argmax
    c = compare(ref, cand)
    assert c.argmax_agreement == pytest.approx(0.9) and agrees(c, 0.9) and not agrees(c, 0.95)


def test_shapes_must_match() -> None:
    with pytest.raises(ParityError, match="shape"):
        compare(_logits(), np.zeros((2, 5, 7), dtype=np.float32))
