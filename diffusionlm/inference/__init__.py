"""Sampling from trained models: the generation API, templates, model loading."""

from diffusionlm.inference.graphed import GraphedSampler
from diffusionlm.inference.loading import ModelLoadError, inference_dtype, load_model
from diffusionlm.inference.result import Generation
from diffusionlm.inference.sampler import GenerationError, generate
from diffusionlm.inference.schedule import tokens_per_step
from diffusionlm.inference.settings import STRATEGIES, SamplerSettings
from diffusionlm.inference.template import TemplateError, has_marker, parse_template, prompt_template

__all__ = [
    "STRATEGIES",
    "Generation",
    "GenerationError",
    "GraphedSampler",
    "ModelLoadError",
    "SamplerSettings",
    "TemplateError",
    "generate",
    "has_marker",
    "inference_dtype",
    "load_model",
    "parse_template",
    "prompt_template",
    "tokens_per_step",
]
