"""The comparison of checkpoints and the readable table."""

from __future__ import annotations

import math

import pytest

from diffusionlm.evaluation import comparisons, format_table


def _model(path: str, key: str, nats: float, se: float, sha: str = "abc") -> dict:
    ppl = "perplexity" if key == "nll" else "perplexity_bound"
    return {"checkpoint": path, "objective": "ar" if key == "nll" else "mdlm", "tokenizer": {"sha256": sha},
            "data": {"split_exhausted": False},
            key: {"nats_per_token": nats, "bits_per_token": nats / math.log(2), ppl: math.exp(nats), "se_nats": se,
                  f"ci95_{ppl}": [math.exp(nats - 2 * se), math.exp(nats + 2 * se)], "sequences": 8, "tokens": 512}}


def test_the_gap_is_later_minus_first_with_its_units() -> None:
    models = [_model("/runs/mdlm", "nelbo", 3.2, 0.03), _model("/runs/ar", "nll", 3.0, 0.04),
              _model("/runs/other", "nll", 3.1, 0.02, sha="def")]
    out = comparisons(models)
    assert [c["b"] for c in out] == ["/runs/ar", "/runs/other"]
    gap = out[0]
    assert gap["a_metric"] == "nelbo" and gap["b_metric"] == "nll"
    assert gap["gap_nats_per_token"] == pytest.approx(-0.2)
    assert gap["gap_bits_per_token"] == pytest.approx(-0.2 / math.log(2))
    assert gap["perplexity_ratio"] == pytest.approx(math.exp(-0.2)) and gap["gap_se_nats"] == pytest.approx(0.05)
    assert gap["same_tokenizer"] and not out[1]["same_tokenizer"]
    assert comparisons(models[:1]) == []

    table = format_table({"models": models, "comparison": out, "samples": None})
    assert "/runs/mdlm" in table and "nelbo" in table and "<=" in table and "-0.2000 nats/token" in table
    assert "different tokenizers" in table
