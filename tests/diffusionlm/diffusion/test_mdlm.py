"""The MDLM objective against a hand computation, and the forward-process invariants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from config import load_config
from diffusionlm.diffusion import SCHEDULES, MDLMObjective, forward_mask, get_schedule, sample_times
from diffusionlm.models import DiffusionTransformer


class FixedLogits(nn.Module):
    """A 'model' whose logits are a fixed table per position: the loss can then be computed by hand."""

    def __init__(self, table: torch.Tensor, mask_id: int):
        super().__init__()
        self.table = table  # [T, V]
        self.mask_id = mask_id

    def forward(self, x, attention_mask=None, t=None, output_mask=None):
        logits = self.table.expand(x.shape[0], -1, -1).clone()
        logits[..., self.mask_id] = float("-inf")
        return logits[output_mask] if output_mask is not None else logits


@pytest.mark.parametrize("masked_only", [True, False])
def test_loss_equals_hand_computed_elbo(masked_only: bool) -> None:
    mask_id = 3
    table = torch.tensor([[0.0, 1.0, 2.0, 0.0, 0.5, -1.0],
                          [2.0, 0.0, 1.0, 0.0, 0.0, 0.0],
                          [0.3, 0.3, 0.3, 0.0, 3.0, 0.0]])
    model = FixedLogits(table, mask_id)
    x0 = torch.tensor([[1, 2, 4], [5, 0, 4]])
    attn = torch.tensor([[True, True, True], [True, True, False]])  # last token of row 2 is padding
    masked = torch.tensor([[True, False, True], [False, True, False]])
    t = torch.tensor([0.5, 0.25])
    obj = MDLMObjective(get_schedule("loglinear"), mask_token_id=mask_id, pad_token_id=0,
                        masked_only_logits=masked_only)
    loss, metrics = obj.loss_at(model, x0, attn, t, masked)

    def ce(pos: int, target: int) -> float:
        row = [v for i, v in enumerate(table[pos].tolist()) if i != mask_id]
        logz = math.log(sum(math.exp(v) for v in row))
        return logz - table[pos, target].item()

    # w(t) = 1/t under log-linear; normalised by the 5 real tokens, not by the 3 masked ones
    expected = (ce(0, 1) / 0.5 + ce(2, 4) / 0.5 + ce(1, 0) / 0.25) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["masked_ce"].item() == pytest.approx((ce(0, 1) + ce(2, 4) + ce(1, 0)) / 3, rel=1e-6)
    assert metrics["num_masked"].item() == 3


def test_pads_are_never_masked_and_mask_rate_follows_t() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(5, 50, (8, 4000))
    real = torch.ones_like(x0, dtype=torch.bool)
    real[:, 3000:] = False
    p = torch.linspace(0.1, 0.9, 8)
    m = forward_mask(x0, p, real, g)
    assert not m[:, 3000:].any()
    rates = m[:, :3000].float().mean(1)
    torch.testing.assert_close(rates, p, atol=0.03, rtol=0)


def test_antithetic_times_cover_the_interval() -> None:
    g = torch.Generator().manual_seed(1)
    t = sample_times(8, 1e-3, True, g, torch.device("cpu"))
    assert t.min() >= 1e-3 and t.max() <= 1.0
    gaps = torch.sort(t).values.diff()
    torch.testing.assert_close(gaps, torch.full_like(gaps, (1 - 1e-3) / 8), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_weight_is_minus_dalpha_over_one_minus_alpha(name: str) -> None:
    s = get_schedule(name)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64, requires_grad=True)
    alpha = 1 - s.mask_prob(t)
    (dalpha,) = torch.autograd.grad(alpha.sum(), t)
    expected = -dalpha / (1 - alpha)
    torch.testing.assert_close(s.weight(t.detach()), expected.detach())
    assert (s.mask_prob(t.detach()).diff() > 0).all(), "more time means more masking"
    with pytest.raises(ValueError, match="unknown noise schedule"):
        get_schedule("quadratic")


def test_padding_is_never_scored_and_loss_has_no_nan() -> None:
    cfg = load_config(None, ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.vocab_size=64",
                             "tokenizer.vocab_size=64", "model.context_length=16", "inference.total_length=16"])
    torch.manual_seed(0)
    model = DiffusionTransformer(cfg.model)
    obj = MDLMObjective.from_config(cfg.objective, cfg.model)
    x0 = torch.randint(5, 64, (4, 16))
    attn = torch.ones(4, 16, dtype=torch.bool)
    attn[:, 8:] = False
    x_pad = x0.clone()
    x_pad[:, 8:] = 0
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    loss_a, _ = obj(model, {"input_ids": x_pad, "attention_mask": attn}, g1)
    x_other = x_pad.clone()
    x_other[:, 8:] = 7  # what sits behind the padding mask must not matter
    loss_b, _ = obj(model, {"input_ids": x_other, "attention_mask": attn}, g2)
    assert torch.isfinite(loss_a)
    torch.testing.assert_close(loss_a, loss_b)


def test_one_optimizer_step_on_a_fixed_batch_reduces_the_loss() -> None:
    cfg = load_config(None, ["model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=64",
                             "tokenizer.vocab_size=64", "model.context_length=32", "inference.total_length=32"])
    torch.manual_seed(0)
    model = DiffusionTransformer(cfg.model)
    obj = MDLMObjective.from_config(cfg.objective, cfg.model)
    batch = {"input_ids": torch.randint(5, 64, (8, 32))}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss_now() -> torch.Tensor:
        return obj(model, batch, torch.Generator().manual_seed(0))[0]

    before = loss_now()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_now()
    assert after.item() < before.item()
