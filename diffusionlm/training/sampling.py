"""Periodic samples during training, so a person can read what the model has learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from config.schema import Config
from diffusionlm.device import Precision
from diffusionlm.inference import generate


def write_samples(model: nn.Module, tokenizer: Any, cfg: Config, device: torch.device, precision: Precision,
                  path: Path) -> list[str]:
    """Generate `training.num_samples` unprompted samples with the run's inference settings, write them to
    `path` and return them. The length is capped at the model's context (a training config need not fit its
    inference settings to the model)."""
    gen = torch.Generator(device=device).manual_seed(cfg.inference.seed)
    prompt = torch.empty(cfg.training.num_samples, 0, dtype=torch.long, device=device)
    length = min(cfg.inference.total_length, cfg.model.context_length)
    was_training = model.training
    model.eval()
    with precision.autocast():
        ids = generate(model, prompt, length, cfg.model.mask_token_id, steps=cfg.training.sample_steps,
                       strategy=cfg.inference.strategy, temperature=cfg.inference.temperature, generator=gen)
    model.train(was_training)
    texts = tokenizer.decode_batch(ids.tolist(), skip_special_tokens=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n---\n\n".join(texts) + "\n", encoding="utf-8")
    return texts
