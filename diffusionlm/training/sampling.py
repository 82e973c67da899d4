"""Periodic samples during training, so a person can read what the model has learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from config.schema import Config
from diffusionlm.device import Precision
from diffusionlm.inference import SamplerSettings, generate


def write_samples(model: nn.Module, tokenizer: Any, cfg: Config, device: torch.device, precision: Precision,
                  path: Path) -> list[str]:
    """Generate `training.num_samples` unprompted samples with the run's inference settings (steps:
    `training.sample_steps`), write them to `path` and return them. The length is capped at the model's context
    (a training config need not fit its inference settings to the model). `device` is where the model is. Runs
    of an objective the masked-diffusion sampler does not fit (AR, block diffusion) get none."""
    if cfg.training.num_samples < 1 or not cfg.objective.masked_diffusion_sampling:
        return []
    length = min(cfg.inference.total_length, cfg.model.context_length)
    settings = SamplerSettings.from_config(cfg.inference, steps=cfg.training.sample_steps)
    was_training = model.training
    model.eval()
    try:
        with precision.autocast():
            gen = generate(model, cfg.model, [cfg.model.mask_token_id] * length, settings,
                           batch_size=cfg.training.num_samples)
    finally:
        model.train(was_training)
    texts = tokenizer.decode_batch(gen.rows(cfg.inference.stop_at_eos), skip_special_tokens=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n---\n\n".join(texts) + "\n", encoding="utf-8")
    return texts
