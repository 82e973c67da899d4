"""The Monte-Carlo NELBO estimator converges to the exact MDLM NELBO, computed by enumerating every masking
pattern of short sequences and integrating over t in float64 (nelbo_reference.py)."""

from __future__ import annotations

import pytest
import torch

from config.model import TransformerConfig
from config.objective import MDLMConfig
from diffusionlm.diffusion import MDLMObjective, get_schedule
from diffusionlm.evaluation import PerSequence, nelbo_per_sequence, rate_estimate, stratified_times
from diffusionlm.models import build_model
from tests.diffusionlm.evaluation.nelbo_reference import ToyMaskedModel, all_sequences, exact_nelbo

V, L, MASK, EPS = 8, 3, 3, 1e-3  # ids 0..4 special (3 = <mask>), 5..7 the real tokens
SEQS = all_sequences([5, 6, 7], L)  # all 27 sequences of length 3


def _transformer() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=V, context_length=L, size=None, d_model=16, n_layers=1, n_heads=2,
                            init_std=0.7)
    return build_model(cfg).eval()


CASES = {
    # the project's transformer (no time input) under the log-linear schedule: w(t) = 1/t
    "transformer-loglinear": (_transformer, "loglinear", 100),
    # a model whose predictions change with t, under the cosine schedule (a non-trivial weight)
    "toy-cosine": (lambda: ToyMaskedModel(V, L, MASK), "cosine", 400),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_monte_carlo_nelbo_converges_to_the_enumerated_nelbo(case: str) -> None:
    make, schedule_name, replicas = CASES[case]
    model, schedule = make(), get_schedule(schedule_name)
    exact = exact_nelbo(model, SEQS, schedule, MASK, EPS)
    finer = exact_nelbo(model, SEQS, schedule, MASK, EPS, nodes=256)
    assert (abs(exact - finer) / finer).max() < 1e-6, "the quadrature has converged (fp32 logits aside)"
    exact_per_token = exact.sum() / (len(SEQS) * L)

    acc = PerSequence()
    gen = torch.Generator().manual_seed(0)
    totals, tokens = nelbo_per_sequence(model, SEQS.repeat(replicas, 1), None, schedule, MASK, k=64, eps=EPS,
                                        generator=gen)
    assert totals.dtype == tokens.dtype == torch.float64
    acc.add(totals, tokens)
    est = acc.estimate()
    assert est.sequences == replicas * len(SEQS) and est.tokens == replicas * len(SEQS) * L
    lo, hi = est.ci95
    assert lo <= exact_per_token <= hi, (est, exact_per_token)
    assert abs(est.nats_per_token - exact_per_token) / exact_per_token < 0.01, (est, exact_per_token)


@pytest.mark.parametrize("stratified", [True, False])
def test_the_interval_of_one_replicated_sequence_covers_its_exact_nelbo(stratified: bool) -> None:
    """With one sequence the per-sequence spread is pure Monte-Carlo noise: the interval is the estimator's own."""
    model, schedule = ToyMaskedModel(V, L, MASK, seed=1), get_schedule("loglinear")
    x = torch.tensor([[5, 7, 6]])
    exact = float(exact_nelbo(model, x, schedule, MASK, EPS)[0]) / L
    gen = torch.Generator().manual_seed(3)
    est = rate_estimate(*nelbo_per_sequence(model, x.repeat(4000, 1), None, schedule, MASK, k=32, eps=EPS,
                                            generator=gen, stratified=stratified))
    lo, hi = est.ci95
    assert lo <= exact <= hi and abs(est.nats_per_token - exact) / exact < 0.01, (est, exact)


def test_the_training_objective_estimates_the_same_nelbo() -> None:
    """val.nelbo (one time per sequence, the training draws) and the eval estimator share their target."""
    model, schedule = ToyMaskedModel(V, L, MASK), get_schedule("loglinear")
    exact_per_token = exact_nelbo(model, SEQS, schedule, MASK, EPS).sum() / (len(SEQS) * L)
    objective = MDLMObjective.from_config(MDLMConfig(eps=EPS), TransformerConfig(vocab_size=V, context_length=L))
    gen = torch.Generator().manual_seed(0)
    batch = {"input_ids": SEQS.repeat(400, 1)}
    with torch.no_grad():
        total = sum(float(objective(model, batch, gen, normalizer=1.0)[0]) for _ in range(20))
    per_token = total / (20 * batch["input_ids"].numel())
    assert abs(per_token - exact_per_token) / exact_per_token < 0.02


def test_stratified_times_cover_each_stratum_once_per_sequence() -> None:
    gen = torch.Generator().manual_seed(0)
    t = stratified_times(5, 8, EPS, True, gen, torch.device("cpu"))
    assert t.shape == (8, 5) and t.dtype == torch.float64
    strata = ((t - EPS) / (1 - EPS) * 8).floor()
    assert torch.equal(strata, torch.arange(8, dtype=torch.float64)[:, None].expand(8, 5))
    offsets = (t - EPS) / (1 - EPS) * 8 - strata
    assert torch.allclose(offsets, offsets[0:1].expand_as(offsets)), "one uniform per sequence, shared by its K"
    iid = stratified_times(5, 8, EPS, False, gen, torch.device("cpu"))
    assert ((iid >= EPS) & (iid <= 1)).all()


def test_padding_is_never_masked_or_counted() -> None:
    model, schedule = ToyMaskedModel(V, L, MASK), get_schedule("loglinear")
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    mask = ids != 0
    gen = torch.Generator().manual_seed(0)
    totals, tokens = nelbo_per_sequence(model, ids, mask, schedule, MASK, k=16, eps=EPS, generator=gen)
    assert tokens.tolist() == [2.0, 1.0] and (totals >= 0).all()


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="K must be at least 1"):
        nelbo_per_sequence(ToyMaskedModel(V, L, MASK), SEQS[:2], None, get_schedule("loglinear"), MASK, k=0, eps=EPS)
