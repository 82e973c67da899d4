"""Sample quality: generative perplexity under a judge model, with unigram entropy and distinct-n beside it.

Why all three: generative perplexity alone rewards degenerate text (a sample repeating one likely word scores a
low perplexity), so diffusion LM papers report it next to the unigram entropy of each sample's tokens (low for
repetitive samples) and distinct-n.

Definitions (tokens are the judge's tokenizer's, else the evaluated run's; text encoded without special tokens):
  * generative perplexity: exp(sum of per-sample NLL / sum of scored tokens) under the judge; an AR judge gives
    the exact NLL of each sample's tokens after its first, an MDLM judge its NELBO (then a perplexity bound).
    Samples longer than the judge's context are cut to it (counted in `truncated`).
  * unigram entropy: per sample, H = -sum_v p_v log p_v (nats) of its token frequencies; averaged over samples.
  * distinct-n (n = 1, 2, 3): unique n-grams / all n-grams, over all samples together (n-grams never span two
    samples).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from diffusionlm.evaluation.stats import PerSequence

Scorer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class SamplesError(ValueError):
    """An unreadable samples file; the message names `eval.samples`."""


def read_samples(path: str | Path) -> list[str]:
    """Texts from `path`: JSON lines (`.jsonl` / `.json`: each a string or an object with `text`), else one
    sample per non-empty line."""
    p = Path(path)
    if not p.is_file():
        raise SamplesError(f"eval.samples: no such file: {p}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SamplesError(f"eval.samples: {p} is not UTF-8 text ({e})") from None
    texts: list[str] = []
    as_json = p.suffix.lower() in (".jsonl", ".json")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not as_json:
            texts.append(line)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SamplesError(f"eval.samples: {p} line {i} is not JSON ({e.msg})") from None
        text = row.get("text") if isinstance(row, dict) else row
        if not isinstance(text, str):
            raise SamplesError(f"eval.samples: {p} line {i} is neither a string nor an object with a 'text' string")
        texts.append(text)
    if not texts:
        raise SamplesError(f"eval.samples: {p} holds no samples")
    return texts


def unigram_entropy(seqs: list[list[int]]) -> float | None:
    """Mean over non-empty samples of the entropy (nats) of the sample's own token frequencies."""
    values = []
    for seq in seqs:
        if not seq:
            continue
        n = len(seq)
        values.append(-sum(c / n * math.log(c / n) for c in Counter(seq).values()))
    return sum(values) / len(values) if values else None


def distinct_n(seqs: list[list[int]], n: int) -> float | None:
    """Unique n-grams / all n-grams over all samples (n-grams within one sample); None when there are none."""
    grams: Counter[tuple[int, ...]] = Counter()
    for seq in seqs:
        grams.update(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else None


def padded_batches(seqs: list[list[int]], context_length: int, batch_size: int, pad_id: int,
                   device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask) batches of the non-empty samples, cut to `context_length`, padded on the right."""
    seqs = [s[:context_length] for s in seqs if s]
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for i, s in enumerate(chunk):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = True
        yield ids.to(device), mask.to(device)


def sample_quality(texts: list[str], tokenizer: Any, judge: Scorer | None = None, judge_context: int = 0,
                   batch_size: int = 16, pad_id: int = 0, device: torch.device | str = "cpu",
                   bound: bool = False) -> dict[str, Any]:
    """The sample-quality record of `texts` (module docstring); `judge` scores padded batches (per-row totals and
    tokens, float64), `bound` says whether its figure is a bound (an MDLM judge)."""
    seqs = [enc.ids for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]
    out: dict[str, Any] = {
        "count": len(texts),
        "empty": sum(1 for s in seqs if not s),
        "tokens": sum(len(s) for s in seqs),
        "unigram_entropy_nats": unigram_entropy(seqs),
        **{f"distinct_{n}": distinct_n(seqs, n) for n in (1, 2, 3)},
        "judge": None,
    }
    if judge is not None:
        acc = PerSequence()
        for ids, mask in padded_batches(seqs, judge_context, batch_size, pad_id, torch.device(device)):
            acc.add(*judge(ids, mask))
        est = acc.estimate().as_dict("gen_ppl_bound" if bound else "gen_ppl")
        out["judge"] = {**est, "bound": bound, "truncated": sum(1 for s in seqs if len(s) > judge_context)}
    return out
