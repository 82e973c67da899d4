"""What every kernel module shares: whether Triton is installed, the GPU generation, package labels."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import torch

# Whether Triton is installed, without importing it (a heavy import, done on a kernel's first launch).
HAVE_TRITON = importlib.util.find_spec("triton") is not None


def is_hopper(device: torch.device) -> bool:
    """Whether `device` is a CUDA GPU of compute capability 9.x. Asked when a kernel policy is resolved, never in
    traced code: decorating it for torch.compile would import torch._dynamo (and with it Triton and sympy, about
    2 s) into every process that only samples on a CPU."""
    if device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] == 9


def package_label(distribution: str) -> str:
    """`distribution` with its installed version ("flash-attn-4 4.0.0b36"), or bare when it is importable
    from a source checkout without being installed as a distribution (for records)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{distribution} {version(distribution)}"
    except PackageNotFoundError:
        return distribution


def triton_kernels() -> ModuleType:
    from diffusionlm.ops import triton_kernels

    return triton_kernels


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
