"""Parameter grouping, Muon/AdamW construction and the learning-rate schedule."""

from __future__ import annotations

import pytest
import torch

from config import load_config
from diffusionlm.models import DiffusionTransformer
from diffusionlm.training.optim import lr_multiplier, make_optimizer, make_scheduler, param_groups


def _model(*extra: str):
    cfg = load_config(None, ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=64",
                             "tokenizer.vocab_size=64", "model.context_length=16", "inference.total_length=16",
                             *extra])
    torch.manual_seed(0)
    return DiffusionTransformer(cfg.model), cfg


def test_muon_groups_take_only_hidden_matrices() -> None:
    model, cfg = _model("optimizer.optimizer_name=muon", "model.tie_embeddings=false")
    groups = {g.name: g for g in param_groups(model, cfg.optimizer)}
    assert set(groups) == {"hidden", "head", "embed", "scalar"}
    assert groups["embed"].param_names == ["embed.weight"]
    assert groups["head"].param_names == ["head.weight"]
    assert all(p.ndim == 2 for p in groups["hidden"].params)
    assert all(p.ndim == 1 for p in groups["scalar"].params)
    n_total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in groups.values() for p in g.params) == n_total


def test_tied_weight_appears_once() -> None:
    model, cfg = _model("optimizer.optimizer_name=muon")
    groups = param_groups(model, cfg.optimizer)
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids))
    assert "head" not in {g.name for g in groups}


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_optimizers_step_and_per_group_lrs(name: str) -> None:
    model, cfg = _model(f"optimizer.optimizer_name={name}", "optimizer.muon.hidden.lr=0.05",
                        "optimizer.muon.embed.lr=0.001")
    groups = param_groups(model, cfg.optimizer)
    opt = make_optimizer(groups, cfg.optimizer)
    assert len(opt.param_groups) == len(groups)
    if name == "muon":
        lrs = {g.name: pg["lr"] for g, pg in zip(groups, opt.param_groups)}
        assert lrs["hidden"] == 0.05 and lrs["embed"] == 0.001
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randint(5, 64, (2, 16))).float().clamp_min(-1e4).sum().backward()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed)


def test_muon_update_is_orthogonalised() -> None:
    # Muon replaces a hidden matrix's update by (roughly) an orthogonal matrix: singular values near 1.
    model, cfg = _model("optimizer.optimizer_name=muon", "optimizer.muon.hidden.weight_decay=0")
    groups = param_groups(model, cfg.optimizer)
    opt = make_optimizer(groups, cfg.optimizer)
    w = model.blocks[0].attn.proj.weight
    before = w.detach().clone()
    logits = model(torch.randint(5, 64, (8, 16))).float().clamp_min(-1e4)
    (logits * torch.randn_like(logits)).sum().backward()  # a full-rank gradient
    raw = w.grad.clone()
    opt.step()
    update = (before - w.detach()) / cfg.optimizer.muon.hidden.lr
    s = torch.linalg.svdvals(update.float())
    assert s.median() > 0.3 and s.max() < 1.6
    s_raw = torch.linalg.svdvals(raw)
    assert s_raw.max() / s_raw.median() > 2 * s.max() / s.median(), "the spectrum must be flattened"


def test_lr_schedule_warmup_then_cosine_to_floor() -> None:
    cfg = load_config(None, ["optimizer.warmup_iteration=10", "optimizer.min_lr_ratio=0.1"]).optimizer
    assert lr_multiplier(0, cfg, 100, cfg.warmup_iteration) == pytest.approx(0.1)
    assert lr_multiplier(9, cfg, 100, cfg.warmup_iteration) == pytest.approx(1.0)
    assert lr_multiplier(10, cfg, 100, cfg.warmup_iteration) == pytest.approx(1.0)
    assert lr_multiplier(55, cfg, 100, cfg.warmup_iteration) == pytest.approx(0.55)
    assert lr_multiplier(100, cfg, 100, cfg.warmup_iteration) == pytest.approx(0.1)
    const = load_config(None, ["optimizer.warmup_iteration=0", "optimizer.lr_schedule=constant"]).optimizer
    assert lr_multiplier(77, const, 100, const.warmup_iteration) == 1.0
    model, full = _model()
    opt = make_optimizer(param_groups(model, full.optimizer), full.optimizer)
    sched = make_scheduler(opt, cfg, 100, cfg.warmup_iteration)
    assert opt.param_groups[0]["lr"] == pytest.approx(full.optimizer.lr * 0.1)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(full.optimizer.lr * 0.2)
