"""A loaded run, its likelihood scorer, and the pass over held-out text that fills one model's record.

Why one pass: the NELBO (or NLL) and the masked accuracies read the same batches, so the data is tokenized and
packed once per model. Batches come from the project's own stream (`build_stream(cfg, tokenizer, split)`):
validation streams are deterministic (no shuffling, no random truncation), so two checkpoints with the same
tokenizer and context see exactly the same rows, and one generator seeded with `eval.seed` per model gives
them the same draws as well (common random numbers make their difference less noisy).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from config.schema import Config, EvalConfig
from diffusionlm.device import Precision
from diffusionlm.diffusion import get_schedule
from diffusionlm.evaluation.ar_nll import nll_per_sequence
from diffusionlm.evaluation.masked_accuracy import masked_accuracy
from diffusionlm.evaluation.nelbo import nelbo_per_sequence
from diffusionlm.evaluation.sample_quality import Scorer
from diffusionlm.evaluation.stats import PerSequence, TokenCounts
from diffusionlm.tokenizer import tokenizer_sha256

LIKELIHOOD = {"mdlm": "nelbo", "ar": "nll"}  # each objective's held-out likelihood metric


@dataclass
class LoadedRun:
    """A checkpoint ready to score: the model (eval mode, on the device), its run config and tokenizer."""

    path: str
    model: nn.Module
    cfg: Config
    tokenizer: Any
    tokenizer_path: Path

    @property
    def objective(self) -> str:
        return self.cfg.objective.name

    def describe(self) -> dict[str, Any]:
        m = self.cfg.model
        count = getattr(self.model, "num_params", None)
        return {
            "checkpoint": str(Path(self.path).resolve()),
            "objective": self.objective,
            "model": {"family": m.family, "causal": getattr(m, "causal", None), "context_length": m.context_length,
                      "vocab_size": m.vocab_size, "parameters": count(True) if count else None},
            "tokenizer": {"path": str(self.tokenizer_path.resolve()),
                          "sha256": hashlib.sha256(self.tokenizer_path.read_bytes()).hexdigest(),
                          "canonical_sha256": tokenizer_sha256(self.tokenizer),  # what shards record
                          "vocab_size": self.tokenizer.get_vocab_size()},
        }


def nelbo_eps(run: LoadedRun, ev: EvalConfig) -> float:
    return ev.eps if ev.eps is not None else run.cfg.objective.eps


def likelihood_scorer(run: LoadedRun, ev: EvalConfig, generator: torch.Generator) -> Scorer:
    """(input_ids, attention_mask) -> (per-row nats, per-row tokens), float64: AR's exact NLL or MDLM's NELBO."""
    if run.objective == "ar":
        return lambda ids, mask: nll_per_sequence(run.model, ids, mask)
    schedule, eps = get_schedule(run.cfg.objective.schedule), nelbo_eps(run, ev)
    mask_id = run.cfg.model.mask_token_id
    return lambda ids, mask: nelbo_per_sequence(run.model, ids, mask, schedule, mask_id, ev.k, eps, generator,
                                                ev.stratified)


def _rows_within(real: torch.Tensor, rows_left: int, tokens_left: float | None) -> int:
    """How many leading rows to keep: at most rows_left, and just enough to reach tokens_left real tokens."""
    keep = min(rows_left, real.shape[0])
    if tokens_left is not None:
        cum = real[:keep].sum(-1).cumsum(0)
        keep = min(keep, int((cum < tokens_left).sum()) + 1)
    return keep


def heldout_record(run: LoadedRun, data_cfg: Config, ev: EvalConfig, metrics: list[str], device: torch.device,
                   precision: Precision) -> dict[str, Any]:
    """Score up to `ev.max_sequences` rows (and `ev.max_tokens` tokens) of the split with `metrics`."""
    from diffusionlm.data import build_stream

    stream = build_stream(data_cfg, run.tokenizer, ev.split)
    gen = torch.Generator(device=device).manual_seed(ev.seed)
    score = likelihood_scorer(run, ev, gen) if LIKELIHOOD[run.objective] in metrics else None
    likelihood = PerSequence()
    rates = ev.mask_rates if "masked_acc" in metrics else []
    counts = {r: TokenCounts() for r in rates}
    schedule = get_schedule(run.cfg.objective.schedule) if rates else None
    rows, tokens, repeated = 0, 0, False
    try:
        while rows < ev.max_sequences and (ev.max_tokens is None or tokens < ev.max_tokens):
            batch = next(stream)
            mask = batch.get("attention_mask")
            real = mask if mask is not None else torch.ones_like(batch["input_ids"], dtype=torch.bool)
            keep = _rows_within(real, ev.max_sequences - rows,
                                None if ev.max_tokens is None else ev.max_tokens - tokens)
            ids = batch["input_ids"][:keep].to(device)
            mask = mask[:keep].to(device) if mask is not None else None
            with precision.autocast():
                if score is not None:
                    likelihood.add(*score(ids, mask))
                for r in rates:
                    masked_accuracy(run.model, ids, mask, schedule, run.cfg.model.mask_token_id, r, ev.mask_mode,
                                    counts[r], gen)
            rows, tokens = rows + keep, tokens + int(real[:keep].sum())
            if stream.stats()["data.epoch"] >= 1:  # the split is used up: stop rather than score text twice
                repeated = True
                break
        stream_info = stream.describe()
    finally:
        stream.close()
    record: dict[str, Any] = {**run.describe(), "metrics": metrics,
                              "data": {"sequences": rows, "tokens": tokens, "split_exhausted": repeated,
                                       "stream": stream_info}}
    if score is not None:
        est = likelihood.estimate()
        if run.objective == "ar":
            record["nll"] = {**est.as_dict("perplexity"), "exact": True}
        else:
            record["nelbo"] = {**est.as_dict("perplexity_bound"), "k": ev.k, "eps": nelbo_eps(run, ev),
                               "stratified": ev.stratified, "schedule": run.cfg.objective.schedule}
    if rates:
        record["masked_accuracy"] = [{"rate": r, "mode": ev.mask_mode, **counts[r].as_dict()} for r in rates]
    return record
