"""diffusionlm: masked diffusion language models."""
