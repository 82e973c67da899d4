"""Block diffusion (BD3-LM): the attention mask against its definition, the loss against MDLM's where they must
agree, no leakage from later clean blocks, training through the Trainer, and the config's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli.train import main as train_main
from config import ConfigError, load_config
from diffusionlm.diffusion import BD3LMObjective, MDLMObjective, block_mask, build_objective, get_schedule
from diffusionlm.diffusion.bd3lm import block_times
from diffusionlm.models import DiffusionTransformer
from diffusionlm.training import Trainer

MASK_ID = 3


def mask_by_definition(L: int, block_size: int) -> torch.Tensor:
    allowed = torch.zeros(2 * L, 2 * L, dtype=torch.bool)
    for i in range(2 * L):
        for j in range(2 * L):
            q_clean, k_clean = i >= L, j >= L
            qb, kb = (i % L) // block_size, (j % L) // block_size
            if not q_clean and not k_clean:
                allowed[i, j] = qb == kb
            elif not q_clean and k_clean:
                allowed[i, j] = kb < qb
            elif q_clean and k_clean:
                allowed[i, j] = kb <= qb
    return allowed


@pytest.mark.parametrize("block_size", [1, 2, 4, 8])
def test_block_mask_equals_its_definition(block_size: int) -> None:
    mask = block_mask(8, block_size)
    assert mask.dtype == torch.bool and mask.shape == (16, 16)
    assert torch.equal(mask, mask_by_definition(8, block_size))
    assert block_mask(8, block_size) is mask, "cached per shape and device"


def test_block_mask_refuses_a_block_size_that_does_not_divide_the_length() -> None:
    with pytest.raises(ValueError, match="block_size"):
        block_mask(8, 3)


def test_block_times_are_stratified_over_batch_and_blocks_within_the_window() -> None:
    g = torch.Generator().manual_seed(0)
    t = block_times(3, 4, (0.3, 0.8), True, g, torch.device("cpu"))
    assert t.shape == (3, 4) and (t >= 0.3).all() and (t <= 0.8).all()
    strata = ((t.flatten() - 0.3) / 0.5 * 12).floor().long().sort().values
    assert torch.equal(strata, torch.arange(12)), "one draw in each of the B x blocks strata"


def tiny(*extra: str):
    return load_config(None, ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=64",
                              "tokenizer.vocab_size=64", "model.context_length=16", "inference.total_length=16",
                              "objective.name=bd3lm", *extra], environ={})


def test_with_one_block_the_loss_is_mdlms_on_the_same_draws() -> None:
    cfg = tiny("objective.block_size=16")
    torch.manual_seed(0)
    model = DiffusionTransformer(cfg.model).eval()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(5, 64, (3, 16), generator=g)
    attn = torch.ones(3, 16, dtype=torch.bool)
    attn[1, -5:] = False  # a padded row
    t = torch.tensor([0.2, 0.5, 0.9])
    masked = (torch.rand(3, 16, generator=g) < t[:, None]) & attn
    mdlm = MDLMObjective(get_schedule("loglinear"), MASK_ID, 0)
    bd3lm = build_objective(cfg)
    assert isinstance(bd3lm, BD3LMObjective) and bd3lm.block_size == 16
    with torch.no_grad():
        ref, ref_metrics = mdlm.loss_at(model, x0, attn, t, masked)
        loss, metrics = bd3lm.loss_at(model, x0, attn, t[:, None], masked)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=0)
    for key in ("masked_ce", "masked_acc", "num_masked"):
        torch.testing.assert_close(metrics[key].float(), ref_metrics[key].float(), atol=1e-5, rtol=0)


def test_noisy_block_b_does_not_see_clean_blocks_from_b_on() -> None:
    cfg = tiny("objective.block_size=4")
    torch.manual_seed(0)
    model = DiffusionTransformer(cfg.model).eval()
    L, bs = 16, 4
    g = torch.Generator().manual_seed(2)
    x0 = torch.randint(5, 64, (2, L), generator=g)
    xt = torch.where(torch.rand(2, L, generator=g) < 0.5, MASK_ID, x0)
    positions = torch.arange(L).repeat(2)

    def noisy_logits(clean: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(torch.cat([xt, clean], dim=1), attn_mask=block_mask(L, bs), position_ids=positions)[:, :L]

    base = noisy_logits(x0)
    for b in range(L // bs):
        changed = x0.clone()
        changed[:, b * bs:] = torch.randint(5, 64, (2, L - b * bs), generator=g)
        after = noisy_logits(changed)
        torch.testing.assert_close(after[:, :(b + 1) * bs], base[:, :(b + 1) * bs], atol=0, rtol=0)
        if b + 1 < L // bs:
            assert not torch.allclose(after[:, (b + 1) * bs:], base[:, (b + 1) * bs:]), \
                "later noisy blocks do read clean block b (the check above is not vacuous)"


def test_the_draws_mask_real_tokens_only_and_each_block_has_its_own_time() -> None:
    cfg = tiny("objective.block_size=4", "objective.clip_min=0.3", "objective.clip_max=0.8")
    obj = build_objective(cfg)
    assert obj.window == (0.3, 0.8)
    seen: dict[str, torch.Tensor] = {}

    def capture(model, x0, attention_mask, t, masked, normalizer=None):
        seen.update(t=t, masked=masked)
        return torch.zeros(()), {}

    obj.loss_at = capture  # type: ignore[method-assign]
    x0 = torch.randint(5, 64, (4, 16))
    attn = torch.ones(4, 16, dtype=torch.bool)
    attn[0, -6:] = False
    obj(None, {"input_ids": x0, "attention_mask": attn}, torch.Generator().manual_seed(0))
    assert seen["t"].shape == (4, 4) and (seen["t"] >= 0.3).all() and (seen["t"] <= 0.8).all()
    assert not (seen["masked"] & ~attn).any()


def test_the_objective_trains_through_the_trainer_and_fits_a_repeated_batch(tmp_path: Path) -> None:
    cfg = load_config(None, [
        "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.vocab_size=512",
        "model.context_length=32", "inference.total_length=32", "objective.name=bd3lm", "objective.block_size=8",
        "tokenizer.vocab_size=512", "tokenizer.train_docs=200", "data.batch_size=4", "data.shuffle_buffer_size=16",
        "training.max_train_iteration=2", "training.val_freq_iteration=2", "training.max_val_iteration=1",
        "training.num_samples=0", "training.log_freq_iteration=1", "logging.backend=noop",
        "logging.run_name=bd3lm", f"logging.output_dir={json.dumps(str(tmp_path))}"], environ={})
    trainer = Trainer(cfg)
    trainer.build()
    assert isinstance(trainer.objective, BD3LMObjective)
    result = trainer.fit()
    assert result.step == 2 and all(torch.isfinite(torch.tensor(loss)) and loss > 0 for _, loss in result.losses)

    # the same objective on one repeated batch: the loss falls
    torch.manual_seed(0)
    model = DiffusionTransformer(cfg.model)
    obj = build_objective(cfg)
    batch = {"input_ids": torch.randint(5, 40, (4, 32))}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss, _ = obj(model, batch, torch.Generator().manual_seed(step % 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


@pytest.mark.parametrize(("settings", "expected"), [
    (["objective.block_size=7"], ["objective.block_size (7)", "model.context_length (32)"]),
    (["objective.block_size=0"], ["objective.block_size"]),
    (["model.causal=true"], ["objective 'bd3lm'", "model.causal"]),
    (["model.time_conditioning=adaln"], ["objective 'bd3lm'", "model.time_conditioning"]),
    (["objective.clip_min=0.5", "objective.clip_max=0.4"], ["objective.clip_min", "objective.clip_max"]),
])
def test_the_cli_refuses_a_bad_pairing_at_config_time(settings: list[str], expected: list[str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--set", "objective.name=bd3lm", "--set", "model.context_length=32", "--set", "inference.total_length=32"]
    for setting in settings:
        args += ["--set", setting]
    with pytest.raises(SystemExit) as e:
        train_main([*args, "--print-config"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and all(s in err for s in expected), err


def test_a_dividing_block_size_loads() -> None:
    cfg = tiny("objective.block_size=8")
    assert cfg.objective.block_size == 8 and cfg.objective.time_window() == (1e-3, 1.0)
    with pytest.raises(ConfigError):
        tiny("objective.block_size=5")
