"""Model definitions. `DiffusionTransformer` is the only family so far."""

from config.schema import MODEL_SIZES
from diffusionlm.models.transformer import DiffusionTransformer, default_ffn_hidden

__all__ = ["MODEL_SIZES", "DiffusionTransformer", "default_ffn_hidden"]
