"""The autoregressive baseline objective: its loss by hand, the causal-model check, and training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from config import ConfigError, load_config, registry
from config.model import TransformerConfig
from diffusionlm.diffusion import ARObjective, build_objective, next_token_targets
from diffusionlm.evaluation import nll_per_sequence
from diffusionlm.models import build_model
from diffusionlm.training import Trainer

V, MASK = 8, 3
TABLE = torch.tensor([[0.1 * ((3 * a + 5 * b) % 7) - 0.2 * (a == b) for b in range(V)] for a in range(V)])


class Bigram(nn.Module):
    """Fixed logits: position i predicts from its own token only, logits = TABLE[x_i] (so trivially causal)."""

    def forward(self, input_ids, attention_mask=None, t=None, output_mask=None, output_index=None):
        logits = TABLE[input_ids].clone()
        logits[..., MASK] = float("-inf")
        return logits[output_mask] if output_mask is not None else logits


def _ce(prev: int, nxt: int) -> float:
    allowed = [v for v in range(V) if v != MASK]
    log_z = math.log(sum(math.exp(float(TABLE[prev, v])) for v in allowed))
    return log_z - float(TABLE[prev, nxt])


def _argmax(prev: int) -> int:
    return max((v for v in range(V) if v != MASK), key=lambda v: float(TABLE[prev, v]))


BATCH = {"input_ids": torch.tensor([[1, 5, 6, 7], [5, 7, 0, 0]]),
         "attention_mask": torch.tensor([[True, True, True, True], [True, True, False, False]])}
PAIRS = [[(1, 5), (5, 6), (6, 7)], [(5, 7)]]  # row 0 starts with <bos>: its text is scored from it


def test_the_loss_is_the_next_token_nll_by_hand() -> None:
    objective = ARObjective(pad_token_id=0)
    hand = [sum(_ce(a, b) for a, b in row) for row in PAIRS]
    n = sum(len(row) for row in PAIRS)
    assert objective.real_tokens(BATCH).tolist() == [[False, True, True, True], [False, True, False, False]]

    loss, metrics = objective(Bigram(), BATCH)
    assert float(loss) == pytest.approx(sum(hand) / n, rel=1e-6)
    assert float(metrics["masked_ce"]) == pytest.approx(sum(hand) / n, rel=1e-6)
    assert int(metrics["num_masked"]) == n
    hits = sum(_argmax(a) == b for row in PAIRS for a, b in row)
    assert float(metrics["masked_acc"]) == pytest.approx(hits / n)
    loss10, _ = objective(Bigram(), BATCH, normalizer=10.0)
    assert float(loss10) == pytest.approx(sum(hand) / 10, rel=1e-6), "divided by the given normalizer"

    totals, tokens = nll_per_sequence(Bigram(), BATCH["input_ids"], BATCH["attention_mask"])
    assert totals.dtype == torch.float64 and tokens.tolist() == [3.0, 1.0]
    assert totals.tolist() == pytest.approx(hand, rel=1e-6), "the eval NLL scores the same pairs"


def test_without_a_mask_every_token_after_the_first_is_a_target() -> None:
    ids = torch.tensor([[5, 6, 7], [7, 7, 5]])
    targets = next_token_targets(ids, None)
    assert targets.tolist() == [[False, True, True], [False, True, True]]
    loss, _ = ARObjective(0)(Bigram(), {"input_ids": ids})
    hand = _ce(5, 6) + _ce(6, 7) + _ce(7, 7) + _ce(7, 5)
    assert float(loss) == pytest.approx(hand / 4, rel=1e-6)


def test_the_ar_objective_refuses_a_bidirectional_model() -> None:
    with pytest.raises(ConfigError, match=r"objective 'ar' needs model.causal = true"):
        load_config(None, ["objective.name=ar"], environ={})
    cfg = load_config(None, ["objective.name=ar", "model.causal=true"], environ={})
    assert isinstance(build_objective(cfg), ARObjective)
    assert registry.objective("ar").families == ("transformer",)
    with pytest.raises(ValueError, match=r"needs model\.causal = true"):
        registry.objective("ar").build(cfg.objective, TransformerConfig())


def test_a_causal_transformer_scores_each_token_without_seeing_it() -> None:
    torch.manual_seed(0)
    model = build_model(TransformerConfig(vocab_size=32, context_length=8, size=None, d_model=32, n_layers=2,
                                          n_heads=2, causal=True)).eval()
    a = torch.randint(5, 32, (2, 8))
    b = a.clone()
    b[:, -1] = (a[:, -1] - 5 + 1) % 27 + 5  # change only the last token
    with torch.no_grad():
        nll_a, _ = nll_per_sequence(model, a, None)
        ce_a = ARObjective(0)(model, {"input_ids": a[:, :-1]})[0]
        ce_b = ARObjective(0)(model, {"input_ids": b[:, :-1]})[0]
        nll_b, _ = nll_per_sequence(model, b, None)
    assert torch.equal(ce_a, ce_b) and not torch.equal(nll_a, nll_b)


TINY = ["model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=512", "model.context_length=64",
        "tokenizer.vocab_size=512", "tokenizer.train_docs=300", "data.batch_size=8", "data.shuffle_buffer_size=64",
        "optimizer.warmup_iteration=2", "optimizer.lr=3e-3", "training.log_freq_iteration=1",
        "training.num_samples=0", "training.skip_validation=true", "training.max_val_iteration=2",
        "logging.backend=noop", "objective.name=ar", "model.causal=true"]


def test_the_ar_objective_trains_through_the_trainer(tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY, "training.max_train_iteration=16", "logging.run_name=ar",
                             f"logging.output_dir={json.dumps(str(tmp_path))}"], environ={})
    trainer = Trainer(cfg)
    result = trainer.fit()
    losses = [loss for _, loss in result.losses]
    assert len(losses) == 16 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3, losses
    assert 'name = "ar"' in (result.run_dir / "config.toml").read_text()

    # val.nelbo of an AR run is the exact NLL per scored token, the quantity the evaluator reports
    from diffusionlm.data import build_stream
    from diffusionlm.evaluation import rate_estimate

    val = trainer.validate()
    stream = build_stream(cfg, trainer.tokenizer, "val")
    rows = [next(stream) for _ in range(cfg.training.max_val_iteration)]
    stream.close()
    with torch.no_grad():
        parts = [nll_per_sequence(trainer.raw_model, b["input_ids"], b.get("attention_mask")) for b in rows]
    est = rate_estimate(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    assert val["val.nelbo"] == pytest.approx(est.nats_per_token, rel=1e-5)
    assert val["val.tokens"] == est.tokens
