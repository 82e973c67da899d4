"""Which path a tensor takes through `diffusionlm.ops`: a Triton kernel or the PyTorch fallback."""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import torch

# Whether Triton is installed, without importing it (a heavy import, done on a kernel's first launch).
HAVE_TRITON = importlib.util.find_spec("triton") is not None

_TRITON_MODES = ("auto", "1", "0", "interpret")


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


def interpreting() -> bool:
    return os.environ.get("DIFFUSIONLM_TRITON") == "interpret"


def triton_enabled(t: torch.Tensor) -> bool:
    """Whether `t` goes through a Triton kernel (decided at trace time under torch.compile).

    DIFFUSIONLM_TRITON: unset, "auto" or "1": CUDA tensors do; "0": nothing does (the PyTorch path, for
    comparisons); "interpret": CPU tensors do too, through Triton's interpreter (TRITON_INTERPRET=1 set
    before Triton is imported), which is how the kernels are tested without a GPU.
    """
    mode = os.environ.get("DIFFUSIONLM_TRITON", "auto")
    if mode not in _TRITON_MODES:
        raise ValueError(f"DIFFUSIONLM_TRITON={mode!r}: expected one of {', '.join(_TRITON_MODES)}")
    if mode == "0" or not (t.is_cuda or mode == "interpret"):
        return False
    return HAVE_TRITON
