"""The compiled-step loss computes exactly the objective's function (run eagerly here: CPU CI has no GPU)."""

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


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
@pytest.mark.parametrize("padded", [False, True])
def test_same_loss_metrics_and_gradients_as_objective(schedule, padded):
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
    ce = cross_entropy_rows(b, targets)
    assert ce.dtype == torch.float32
    torch.testing.assert_close(ce.double(), ce_ref, rtol=1e-5, atol=1e-5)
    (weights.double() * ce_ref).sum().backward()
    (weights * ce).sum().backward()
    assert b.grad.dtype == dtype and torch.isfinite(b.grad).all()
    assert (b.grad[:, 3] == 0).all()
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(b.grad.double(), a.grad.double(), rtol=tol, atol=tol)
