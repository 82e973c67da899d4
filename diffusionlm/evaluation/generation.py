"""The one call site of the sampler (`diffusionlm.inference.generate`) in evaluation.

Why an adapter: the inference API changes; evaluation needs only "N unconditional samples of L positions in S
steps, as text", so that request is written once here and nothing else in this package knows the sampler's
signature. Samples are cut at their first generated `<eos>` (one document each, as the trainer's samples are),
at temperature 1 with no top-k / top-p filtering, so their statistics are the model's own.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from config.model import ModelConfig


def generate_texts(model: nn.Module, model_cfg: ModelConfig, tokenizer: Any, num_samples: int, length: int,
                   steps: int, strategy: str, seed: int, batch_size: int = 16) -> list[str]:
    """`num_samples` unconditional samples of up to `length` tokens, decoded without special tokens."""
    from diffusionlm.inference import SamplerSettings, generate

    texts: list[str] = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        # Rows draw from streams keyed by (seed, row): a new seed per chunk keeps chunks from repeating each other.
        settings = SamplerSettings(strategy=strategy, steps=steps, temperature=1.0, seed=seed + start)
        out = generate(model, model_cfg, [model_cfg.mask_token_id] * length, settings, batch_size=n)
        texts.extend(tokenizer.decode_batch(out.rows(stop_at_eos=True), skip_special_tokens=True))
    return texts
