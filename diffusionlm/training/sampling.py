"""Periodic samples during training, so a person can read what the model has learned."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from diffusionlm.inference import generate

if TYPE_CHECKING:
    from diffusionlm.training.trainer import Trainer


def write_samples(trainer: Trainer) -> list[str]:
    cfg = trainer.cfg
    gen = torch.Generator(device=trainer.device).manual_seed(cfg.inference.seed)
    prompt = torch.empty(cfg.training.num_samples, 0, dtype=torch.long, device=trainer.device)
    was_training = trainer.raw_model.training
    trainer.raw_model.eval()
    with trainer.precision.autocast():
        ids = generate(trainer.raw_model, prompt, cfg.inference.total_length, cfg.model.mask_token_id,
                       steps=cfg.training.sample_steps, strategy=cfg.inference.strategy,
                       temperature=cfg.inference.temperature, generator=gen)
    trainer.raw_model.train(was_training)
    texts = trainer.tokenizer.decode_batch(ids.tolist(), skip_special_tokens=True)
    trainer.run.samples.mkdir(parents=True, exist_ok=True)
    out = trainer.run.samples / f"step_{trainer.micro_step}.txt"
    out.write_text("\n\n---\n\n".join(texts) + "\n", encoding="utf-8")
    trainer.logger.info(f"sample at step {trainer.micro_step}: {texts[0][:300]!r}" if texts else "no samples")
    return texts
