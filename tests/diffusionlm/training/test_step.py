"""The compiled-step loss computes exactly the objective's function (run eagerly here: CPU CI has no GPU)."""

import os

import pytest
import torch
import torch.nn.functional as F

from config.schema import Config
from diffusionlm.diffusion import MDLMObjective
from diffusionlm.models import DiffusionTransformer
from diffusionlm.training.step import CompiledMaskedLoss, cross_entropy_rows


def _setup(schedule: str = "loglinear", masked_only: bool = True):
    cfg = Config()
    cfg.model.vocab_size, cfg.model.n_layers, cfg.model.context_length = 300, 2, 32
    cfg.diffusion.schedule, cfg.diffusion.masked_only_logits = schedule, masked_only
    torch.manual_seed(0)
    model = DiffusionTransformer(cfg.model)
    objective = MDLMObjective.from_config(cfg.diffusion, cfg.model.mask_token_id, cfg.model.pad_token_id)
    return model, objective


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.fixture(params=["pytorch", "triton"])
def kernels(request, monkeypatch):
    """The loss's own path (cross-entropy statistics, SwiGLU) through PyTorch or through the Triton kernels
    (run by Triton's interpreter on the CPU: see diffusionlm/ops)."""
    if request.param == "triton":
        pytest.importorskip("triton", reason="Triton is not installed")
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("Triton's interpreter was not chosen before Triton was imported")
        monkeypatch.setenv("DIFFUSIONLM_TRITON", "interpret")
    else:
        monkeypatch.setenv("DIFFUSIONLM_TRITON", "0")
    return request.param


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
@pytest.mark.parametrize("padded", [False, True])
def test_same_loss_metrics_and_gradients_as_objective(schedule, padded, kernels):
    model, objective = _setup(schedule)
    fast = CompiledMaskedLoss(objective, model, compile=False)
    x0 = torch.randint(5, 300, (4, 32))
    batch = {"input_ids": x0}
    if padded:  # rows of different lengths: padding is never masked and never attended to
        lengths = torch.tensor([32, 20, 9, 27])
        batch["attention_mask"] = torch.arange(32)[None, :] < lengths[:, None]
        batch["input_ids"] = torch.where(batch["attention_mask"], x0, 0)
    for seed in range(3):
        normalizer = torch.tensor(100.0 + seed)
        loss_a, m_a = objective(model, batch, torch.Generator().manual_seed(seed), normalizer)
        grads_a = _grads(model, loss_a)
        loss_b, m_b = fast(batch, torch.Generator().manual_seed(seed), normalizer)
        grads_b = _grads(model, loss_b)
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
        for key in ("masked_ce", "masked_acc", "mask_fraction", "num_masked"):
            torch.testing.assert_close(m_b[key].float(), m_a[key].float(), rtol=1e-6, atol=1e-6)
        for ga, gb in zip(grads_a, grads_b):
            torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)  # fp32 rounding of another formula
    assert m_a["num_masked"] > 0


def test_default_normalizer_is_real_tokens_like_objective():
    model, objective = _setup()
    fast = CompiledMaskedLoss(objective, model, compile=False)
    batch = {"input_ids": torch.randint(5, 300, (2, 32))}
    loss_a, _ = objective(model, batch, torch.Generator().manual_seed(1))
    loss_b, _ = fast(batch, torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)


def test_rejects_full_vocabulary_objective():
    model, objective = _setup(masked_only=False)
    with pytest.raises(ValueError, match="masked_only_logits"):
        CompiledMaskedLoss(objective, model, compile=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_cross_entropy_matches_torch_with_masked_out_column(dtype):
    gen = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(64, 257, generator=gen)).to(dtype)
    z[:, 3] = float("-inf")  # the <mask> column the model always sets to -inf
    targets = torch.randint(5, 257, (64,), generator=gen)
    weights = torch.rand(64, generator=gen)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    ce_ref = F.cross_entropy(a.double(), targets, reduction="none")
    ce, _ = cross_entropy_rows(b, targets)
    assert ce.dtype == torch.float32
    torch.testing.assert_close(ce.double(), ce_ref, rtol=1e-5, atol=1e-5)
    (weights.double() * ce_ref).sum().backward()
    (weights * ce).sum().backward()
    assert b.grad.dtype == dtype and torch.isfinite(b.grad).all()
    assert (b.grad[:, 3] == 0).all()
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(b.grad.double(), a.grad.double(), rtol=tol, atol=tol)


def test_static_capacity_path_matches_exact_path_and_bounds_the_count():
    model, objective = _setup()
    exact = CompiledMaskedLoss(objective, model, compile=False, static_shapes=False)
    static = CompiledMaskedLoss(objective, model, compile=False, static_shapes=True)
    batch = {"input_ids": torch.randint(5, 300, (8, 32))}
    cap = static.capacity(8, 32)
    assert 0.5 * 8 * 32 < cap < 8 * 32  # tighter than every position, above the mean
    for seed in range(4):
        loss_a, m_a = exact(batch, torch.Generator().manual_seed(seed), 200.0)
        loss_b, m_b = static(batch, torch.Generator().manual_seed(seed), 200.0)
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
        for key in ("masked_ce", "masked_acc", "num_masked"):
            torch.testing.assert_close(m_b[key].float(), m_a[key].float(), rtol=1e-6, atol=1e-6)
        assert int(m_b["num_masked"]) <= cap and int(m_b["num_dropped"]) == 0


def test_overflow_beyond_capacity_is_reported_not_hidden():
    model, objective = _setup()
    static = CompiledMaskedLoss(objective, model, compile=False, static_shapes=True)
    static._capacity[(8, 32)] = 3  # force a capacity far below the masked count
    _, m = static({"input_ids": torch.randint(5, 300, (8, 32))}, torch.Generator().manual_seed(0), 200.0)
    assert int(m["num_dropped"]) == int(m["num_masked"]) - 3 > 0


def test_static_shapes_need_antithetic_times():
    model, objective = _setup()
    objective.antithetic = False
    assert CompiledMaskedLoss(objective, model, compile=False).static_shapes is False
    with pytest.raises(ValueError, match="antithetic"):
        CompiledMaskedLoss(objective, model, compile=False, static_shapes=True)


def test_deferred_stats_read_names_and_values():
    from diffusionlm.training.step import STAT_NAMES, DeferredStats

    stats = DeferredStats(torch.arange(len(STAT_NAMES), dtype=torch.float32), step=7, data_wait_s=0.5)
    assert stats.ready and stats.step == 7
    assert stats["metrics.loss"] == 0.0 and stats["metrics.tokens"] == 4.0 and stats["metrics.skipped_step"] == 6.0
    assert dict(stats)["metrics.data_wait_s"] == 0.5
