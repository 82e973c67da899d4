"""Model families, built by name from the registry (config/registry.py).

The family contract: `build(model_cfg, kernels) -> nn.Module` whose forward takes
`input_ids` [B, T] int64 and the keywords `attention_mask` (bool [B, T], False at padding), `t` (diffusion
time [B]; families without time conditioning ignore it), `output_index` (int64 [N] flat positions into
B*T: only those rows go through the head) and `output_mask` (the same selection as a bool [B, T]), and
returns logits [B, T, V], or [N, V] with a selection, with the `<mask>` logit -inf. It also has
`num_params(include_embeddings: bool) -> int`, and `blocks` (an nn.ModuleList) where per-block activation
norms can be logged. `DiffusionTransformer` is the family "transformer".
"""

from __future__ import annotations

import torch.nn as nn

from config import registry
from config.model import MODEL_SIZES, ModelConfig
from diffusionlm.models.transformer import DiffusionTransformer, default_ffn_hidden
from diffusionlm.ops import PYTORCH, KernelPolicy


def build_model(model_cfg: ModelConfig, kernels: KernelPolicy = PYTORCH) -> nn.Module:
    """The family `model_cfg.family` with the given settings and kernel policy (weights initialised)."""
    return registry.family(model_cfg.family).build(model_cfg, kernels)


__all__ = ["MODEL_SIZES", "DiffusionTransformer", "build_model", "default_ffn_hidden"]
