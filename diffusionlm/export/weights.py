"""The bundle's weights: fp16 safetensors, the tied embedding/head stored once.

fp16 rather than bf16 because the edge runtimes this targets (TensorRT on Jetson, onnxruntime) compute in fp16 and
the Orin's tensor cores run it natively; the parity check measures what the rounding costs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from config.model import ModelConfig
from diffusionlm.models import build_model
from diffusionlm.ops import PYTORCH

WEIGHTS = "model.safetensors"


def save_fp16(model: nn.Module, path: Path) -> None:
    """Write `model`'s weights as fp16; safetensors' save_model keeps one copy of tensors that share storage."""
    from safetensors.torch import save_model

    half = copy.deepcopy(model).to(torch.float16)
    save_model(half, str(path), metadata={"format": "pt", "dtype": "float16"})


def non_finite_weights(model: nn.Module) -> list[str]:
    """Names of parameters holding inf or NaN, e.g. values beyond fp16's range (65504) after the cast."""
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def load_weights(model_cfg: ModelConfig, path: Path) -> nn.Module:
    """A fresh fp32 model of `model_cfg` with the weights at `path` (upcast from fp16), in eval mode."""
    from safetensors.torch import load_model

    model = build_model(model_cfg, PYTORCH)
    load_model(model, str(path))
    return model.eval()
