"""`[model]`: what every model family shares, and the transformer family's own settings.

A family's section subclasses `ModelConfig` and fixes `family` to its registry name; the registry
(config/registry.py) picks the class from the `family` key, so each family validates its own keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.section import Section

# Named model sizes: (d_model, n_layers, n_heads). The one table that the model, the benchmarks and
# the docs share.
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (256, 4, 4),
    "small": (384, 6, 6),
    "medium": (512, 8, 8),
    "large": (640, 10, 10),
    "xlarge": (768, 12, 12),
    "xxlarge": (1024, 16, 16),
}


# Attention memory grows with the square of the context: one layer's bf16 scores at 65,536 tokens already take 8 GiB
# per head and sequence where no fused kernel applies (a CPU, a padding mask), and a step that large cannot react to
# a stop signal for minutes. Longer contexts are a different model (block diffusion, sliding windows).
MAX_CONTEXT = 65_536


class ModelConfig(Section):
    """Settings every family has: the vocabulary, the longest sequence, the special ids, the device."""

    family: str = Field("transformer", description="model family, a name in config.registry.FAMILIES")
    vocab_size: int = Field(8192, gt=5)
    context_length: int = Field(256, ge=2, le=MAX_CONTEXT, description="longest sequence the model is built for, in "
                                "tokens (a masked model needs at least two; at most MAX_CONTEXT)")
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    mask_token_id: int = 3
    unk_token_id: int = 4
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")

    @model_validator(mode="after")
    def _check_special_ids(self) -> ModelConfig:
        specials = [self.pad_token_id, self.bos_token_id, self.eos_token_id, self.mask_token_id, self.unk_token_id]
        if len(set(specials)) != len(specials):
            raise ValueError("special token ids (pad, bos, eos, mask, unk) must be distinct")
        if max(specials) >= self.vocab_size or min(specials) < 0:
            raise ValueError("special token ids must lie in [0, vocab_size)")
        return self


class TransformerConfig(ModelConfig):
    """The bidirectional (or, with `causal`, autoregressive) transformer of diffusionlm/models/transformer.py."""

    family: Literal["transformer"] = "transformer"
    size: Literal["tiny", "small", "medium", "large", "xlarge", "xxlarge"] | None = "tiny"
    d_model: int | None = Field(None, gt=0, description="explicit width; overrides `size`")
    n_layers: int | None = Field(None, gt=0)
    n_heads: int | None = Field(None, gt=0)
    ffn_hidden: int | None = Field(None, gt=0, description="SwiGLU hidden width; default ~8/3 d, rounded to 64")
    rope_theta: float = Field(10000.0, gt=0)
    norm_eps: float = Field(1e-6, gt=0)
    tie_embeddings: bool = True
    time_conditioning: Literal["none", "adaln"] = "none"
    causal: bool = False
    init_std: float = Field(0.02, gt=0)
    residual_in_fp32: bool = Field(
        True, description="under bf16/fp16 autocast, keep the residual stream in fp32; false carries it in the "
        "autocast dtype (half the memory traffic of the norm/add kernels, as Megatron does by default)")

    @model_validator(mode="after")
    def _resolve_size(self) -> TransformerConfig:
        if self.size is not None:
            d, n_l, n_h = MODEL_SIZES[self.size]
            # Explicit fields win over the named size so `--set model.n_layers=2` works on top of it.
            for name, value in (("d_model", d), ("n_layers", n_l), ("n_heads", n_h)):
                if getattr(self, name) is None:
                    object.__setattr__(self, name, value)
        missing = [n for n in ("d_model", "n_layers", "n_heads") if getattr(self, n) is None]
        if missing:
            raise ValueError(f"set `size` or all of d_model, n_layers, n_heads (missing: {', '.join(missing)})")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError("head dimension d_model // n_heads must be even for RoPE")
        return self
