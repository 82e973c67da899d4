"""The trainer's periodic samples come from the masked-diffusion sampler, so only objectives it fits get them."""

from __future__ import annotations

from pathlib import Path

import torch

from config import load_config
from diffusionlm.data import iter_texts
from diffusionlm.device import resolve_precision
from diffusionlm.models import build_model
from diffusionlm.tokenizer import build_tokenizer
from diffusionlm.training.sampling import write_samples


def _cfg(*extra: str):
    return load_config(None, ["model.vocab_size=300", "tokenizer.vocab_size=300", "model.context_length=16",
                              "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "training.num_samples=2",
                              "training.sample_steps=4", "inference.total_length=16", *extra], environ={})


def test_mdlm_runs_get_samples_and_other_objectives_none(tmp_path: Path) -> None:
    precision = resolve_precision("fp32", torch.device("cpu"))
    tokenizer = build_tokenizer(_cfg(), iter_texts(_cfg(), "train"))  # trained on the built-in corpus
    for extra, expected in (((), 2), (("objective.name=ar", "model.causal=true"), 0),
                            (("objective.name=bd3lm", "objective.block_size=4"), 0)):
        cfg = _cfg(*extra)
        torch.manual_seed(0)
        model = build_model(cfg.model)
        out = tmp_path / f"{cfg.objective.name}.txt"
        texts = write_samples(model, tokenizer, cfg, torch.device("cpu"), precision, out)
        assert len(texts) == expected, cfg.objective.name
        assert out.exists() == (expected > 0)
        if expected:
            assert all(isinstance(t, str) and t for t in texts)
