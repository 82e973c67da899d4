"""Sampling from trained models."""

from diffusionlm.inference.loading import ModelLoadError, inference_dtype, load_model
from diffusionlm.inference.sampler import generate, tokens_per_step

__all__ = ["ModelLoadError", "generate", "inference_dtype", "load_model", "tokens_per_step"]
