"""Tiny models to export: a trained run (a few Trainer steps) and hand-made `final/` exports whose weights a test
sets (time conditioning that really depends on t, weights beyond fp16's range)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from config import load_config
from diffusionlm.models import build_model
from diffusionlm.tokenizer import save_tokenizer, train_tokenizer
from diffusionlm.training import Trainer
from diffusionlm.training.export import export_final

TRAIN = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.vocab_size=512", "model.context_length=32",
         "tokenizer.vocab_size=512", "tokenizer.train_docs=200", "data.batch_size=8", "data.shuffle_buffer_size=16",
         "optimizer.warmup_iteration=1", "training.max_train_iteration=3", "training.num_samples=0",
         "training.skip_validation=true", "logging.backend=noop"]
MODEL = ["model.vocab_size=320", "tokenizer.vocab_size=300", "model.context_length=32", "model.d_model=32",
         "model.n_layers=2", "model.n_heads=2"]
TEXTS = ["Once upon a time there was a little cat. The end.", "The dog ran to the park and played all day.",
         "A girl found a red ball under the big tree."] * 20


def trained_run(root: Path, name: str = "run") -> Path:
    """A run directory (config.toml, checkpoints/step_3, final/) after three training steps."""
    cfg = load_config(None, [*TRAIN, f"logging.run_name={name}", f"logging.output_dir={json.dumps(str(root))}"],
                      environ={})
    return Trainer(cfg).fit().run_dir


def final_export(root: Path, overrides: list[str], edit: Callable[[nn.Module], None] | None = None) -> Path:
    """`root/final/` of a fresh model of MODEL + `overrides`, its weights changed by `edit` first."""
    cfg = load_config(None, [*MODEL, *overrides], environ={})
    save_tokenizer(train_tokenizer(TEXTS, 300), root / "tokenizer.json")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    if edit is not None:
        with torch.no_grad():
            edit(model)
    return export_final(model, cfg, root / "tokenizer.json", root / "final")


def condition_on_time(model: nn.Module) -> None:
    """adaLN starts at zero (the unconditioned network); give it weights so the logits depend on t."""
    for block in model.blocks:
        nn.init.normal_(block.adaln.weight, std=0.5)
    nn.init.normal_(model.time_embed.mlp[2].weight, std=0.5)


def beyond_fp16(model: nn.Module) -> None:
    """A final-norm gain past fp16's largest value (65504): fine in fp32, inf once the weights are cast."""
    model.norm.weight.fill_(1e5)
