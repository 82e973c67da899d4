"""A new model family and a new objective plug in through the registry alone: this file defines both,
registers them, and trains them through the unchanged `Trainer` (checkpoint, validation, export)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from config import load_config, registry
from config.model import ModelConfig
from config.objective import ObjectiveConfig
from diffusionlm.ops import KernelPolicy
from diffusionlm.training import Trainer


class BagConfig(ModelConfig):
    """A bag-of-embeddings model: each position sees its own token and the mean of all tokens."""

    family: Literal["bag"] = "bag"
    width: int = Field(32, gt=0)


class BagModel(nn.Module):
    def __init__(self, cfg: BagConfig, kernels: KernelPolicy):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.blocks = nn.ModuleList([nn.Linear(2 * cfg.width, cfg.width)])
        self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)

    def num_params(self, include_embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if include_embeddings else n - self.embed.weight.numel() - self.head.weight.numel()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                t: torch.Tensor | None = None, output_index: torch.Tensor | None = None,
                output_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(input_ids)
        context = x.mean(dim=1, keepdim=True).expand_as(x)
        h = torch.tanh(self.blocks[0](torch.cat([x, context], dim=-1)))
        if output_mask is not None:
            h = h[output_mask]
        elif output_index is not None:
            h = h.flatten(0, 1).index_select(0, output_index)
        return self.head(h).index_fill(-1, torch.tensor([self.cfg.mask_token_id], device=h.device), float("-inf"))


class ShiftConfig(ObjectiveConfig):
    """Predict each next token from the current one's bag features (a toy, not a language model)."""

    name: Literal["shift"] = "shift"
    scale: float = Field(1.0, gt=0)


class ShiftObjective:
    def __init__(self, cfg: ShiftConfig, model_cfg: ModelConfig):
        self.scale = cfg.scale

    def real_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch.get("attention_mask")
        return mask if mask is not None else torch.ones_like(batch["input_ids"], dtype=torch.bool)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                 normalizer: torch.Tensor | float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids = batch["input_ids"]
        logits = model(ids)[:, :-1].float()
        ce = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
        n = torch.tensor(float(ce.numel()), device=ids.device)
        normalizer = n if normalizer is None else normalizer
        hits = (logits.argmax(-1).flatten() == ids[:, 1:].flatten()).sum()
        return self.scale * ce.sum() / normalizer, {"masked_ce": ce.detach().mean(), "masked_acc": hits / n,
                                                    "num_masked": n}

    def training_loss(self, model: nn.Module, device: torch.device, compile: bool = False,
                      kernels: KernelPolicy | None = None):
        return functools.partial(self, model)


@pytest.fixture
def plugins() -> Iterator[None]:
    registry.register_family("bag", BagConfig, BagModel)
    registry.register_objective("shift", ShiftConfig, ShiftObjective, families=("bag",))
    try:
        yield
    finally:
        del registry.FAMILIES["bag"], registry.OBJECTIVES["shift"]


def test_a_registered_family_and_objective_train_through_the_trainer(tmp_path: Path, plugins: None) -> None:
    cfg = load_config(None, [
        "model.family=bag", "model.width=24", "model.vocab_size=512", "model.context_length=32",
        "objective.name=shift", "objective.scale=2.0", "tokenizer.vocab_size=512", "tokenizer.train_docs=200",
        "data.batch_size=4", "data.shuffle_buffer_size=16", "training.max_train_iteration=2",
        "training.val_freq_iteration=2", "training.max_val_iteration=2", "training.num_samples=0",
        "training.log_freq_iteration=1", "logging.backend=noop", "logging.run_name=bag",
        "logging.log_activation_norms=true", f"logging.output_dir={json.dumps(str(tmp_path))}"], environ={})
    trainer = Trainer(cfg)
    trainer.build()
    assert isinstance(trainer.raw_model, BagModel) and isinstance(trainer.objective, ShiftObjective)
    before = trainer.raw_model.blocks[0].weight.detach().clone()
    result = trainer.fit()
    assert result.step == 2 and len(result.losses) == 2 and all(loss > 0 for _, loss in result.losses)
    assert not torch.equal(trainer.raw_model.blocks[0].weight, before), "two optimizer steps changed the weights"
    assert result.last_val_nelbo is not None and result.last_val_nelbo > 0
    saved = (result.run_dir / "config.toml").read_text()
    assert 'family = "bag"' in saved and 'name = "shift"' in saved and "width = 24" in saved
    assert (result.run_dir / "checkpoints" / "step_2" / "meta.json").is_file()
    assert (result.run_dir / "final" / "model.safetensors").is_file()
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("metrics.act_rms/block0" in m for m in metrics), "activation norms hook the family's blocks"

    resumed = Trainer(cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"max_train_iteration": 3})}), resume="auto")
    assert resumed.fit().step == 3, "a checkpoint of the plug-in model resumes"
