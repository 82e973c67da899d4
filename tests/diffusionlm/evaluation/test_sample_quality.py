"""Sample-quality metrics: unigram entropy, distinct-n, reading samples, generative perplexity under a judge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from diffusionlm.evaluation import SamplesError, distinct_n, read_samples, sample_quality, unigram_entropy
from diffusionlm.evaluation.sample_quality import padded_batches


def test_unigram_entropy_by_hand() -> None:
    # [1, 1, 2, 3]: p = 1/2, 1/4, 1/4 -> 1.5 ln 2; [4, 4]: 0; an empty sample is left out
    assert unigram_entropy([[1, 1, 2, 3], [4, 4], []]) == pytest.approx((1.5 * math.log(2) + 0.0) / 2)
    assert unigram_entropy([[]]) is None


def test_distinct_n_counts_unique_over_all_ngrams_within_samples() -> None:
    seqs = [[1, 2, 1, 2], [1, 2, 3]]
    assert distinct_n(seqs, 1) == pytest.approx(3 / 7)
    assert distinct_n(seqs, 2) == pytest.approx(3 / 5)  # (1,2) (2,1) (1,2) | (1,2) (2,3): never (2,1) across samples
    assert distinct_n(seqs, 3) == pytest.approx(3 / 3)
    assert distinct_n([[1]], 2) is None


def test_read_samples_plain_lines_and_json_lines(tmp_path: Path) -> None:
    txt = tmp_path / "s.txt"
    txt.write_text("first sample\n\nsecond one\n", encoding="utf-8")
    assert read_samples(txt) == ["first sample", "second one"]
    jl = tmp_path / "s.jsonl"
    jl.write_text(json.dumps("plain string") + "\n" + json.dumps({"text": "in an object", "id": 3}) + "\n")
    assert read_samples(jl) == ["plain string", "in an object"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "typo"}\n')
    with pytest.raises(SamplesError, match=r"eval\.samples: .* line 1"):
        read_samples(bad)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SamplesError, match="no samples"):
        read_samples(tmp_path / "empty.txt")
    with pytest.raises(SamplesError, match="no such file"):
        read_samples(tmp_path / "missing.txt")


def test_padded_batches_cut_to_the_context_and_mask_padding() -> None:
    batches = list(padded_batches([[5, 6, 7, 8, 9], [], [5]], context_length=3, batch_size=8, pad_id=0,
                                  device=torch.device("cpu")))
    assert len(batches) == 1
    ids, mask = batches[0]
    assert ids.tolist() == [[5, 6, 7], [5, 0, 0]] and mask.tolist() == [[True, True, True], [True, False, False]]


class CharTokenizer:
    """Each character is a token (ids >= 5), enough of the `tokenizers` interface for sample_quality."""

    class Encoding:
        def __init__(self, ids: list[int]):
            self.ids = ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[CharTokenizer.Encoding]:
        return [self.Encoding([5 + ord(c) % 3 for c in text]) for text in texts]


def test_generative_perplexity_is_exp_of_the_judges_nats_per_token() -> None:
    def judge(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = mask.sum(-1, dtype=torch.float64)
        return 2.0 * tokens, tokens  # 2 nats per token

    out = sample_quality(["abcabc", "aaa", ""], CharTokenizer(), judge, judge_context=4, batch_size=2)
    assert out["count"] == 3 and out["empty"] == 1 and out["tokens"] == 9
    assert out["judge"]["gen_ppl"] == pytest.approx(math.exp(2.0)) and out["judge"]["tokens"] == 7
    assert out["judge"]["truncated"] == 1 and out["judge"]["bound"] is False
    assert out["distinct_1"] == pytest.approx(3 / 9)
    assert sample_quality(["ab"], CharTokenizer())["judge"] is None
