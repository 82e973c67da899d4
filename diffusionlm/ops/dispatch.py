"""What every kernel module shares: whether Triton is installed, the GPU generation, package labels."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import torch

# Whether Triton is installed, without importing it (a heavy import, done on a kernel's first launch).
HAVE_TRITON = importlib.util.find_spec("triton") is not None


@torch.compiler.assume_constant_result
def _is_hopper(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] == 9


def is_hopper(device: torch.device) -> bool:
    """Whether `device` is a CUDA GPU of compute capability 9.x; a constant to torch.compile (no graph break)."""
    if device.type != "cuda":
        return False
    return _is_hopper(device.index if device.index is not None else torch.cuda.current_device())


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
