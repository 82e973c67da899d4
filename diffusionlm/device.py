"""Device selection and the mixed-precision policy: shared by training, inference and the benchmarks."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def select_device(requested: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; otherwise exactly what was asked (validated)."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {requested!r} requested but MPS is not available")
    return device


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16
    device: torch.device

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def resolve_precision(requested: str, device: torch.device) -> Precision:
    if requested == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "mps":
            name = "fp16"
        else:
            name = "fp32"  # CPU autocast is slow on most CPUs and changes numerics; opt in with bf16
        return Precision(name, device)
    return Precision(requested, device)
