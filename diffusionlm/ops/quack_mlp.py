"""The SwiGLU MLP on Hopper through quack's CuTe-DSL matrix products, whose epilogues do the SwiGLU work.

quack (the `quack-kernels` package, which FlashAttention-4 installs) has a gate/up product that applies
SwiGLU in its epilogue and writes both the product and the activation, and a down-projection input-gradient
product that applies the SwiGLU backward in its epilogue and recomputes the activation for the down weight's
gradient. So the activation's forward pass over the [M, 2 x hidden] product is never run as a kernel of its
own, and neither is its backward. At base's shape on an H100 (65,536 rows, 768 -> 2 x 2048 -> 768), the
forward took 0.65 ms against 0.86 ms for cuBLAS plus our SwiGLU kernel, the fused backward product 0.57 ms
against 0.64 ms for our Triton one, and the MLP forward and backward 3.17 ms against 3.43 ms (quack 0.6.5;
benchmarking/results/microbench_kernels_h100_2026-11-22.json).

quack's gated epilogues pair gate and up as adjacent columns, so the gate/up weight goes in with its rows
interleaved (gate row i, then up row i): a copy of a 6 MB weight per step, differentiated by autograd like
any reshape. The model keeps its [gate; up] layout, so checkpoints do not change.

Taken where `[kernels] mlp` resolves to "quack" (ops/policy.py), and only with the pinned quack-kernels /
nvidia-cutlass-dsl pair (`QUACK_PIN`, the `fa4` extra of pyproject.toml) when its gated products import;
otherwise the Triton path runs, with one warning. quack fingerprints the functions its epilogues reach to key
its kernel cache, and reads a library's functions by name only when they live under a `site-packages` or
`dist-packages` folder: cutlass-dsl installed elsewhere (`pip install --target some/dir`) makes quack walk
into the DSL's own objects, which it refuses, and the import fails. Install it into an environment.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from diffusionlm.ops.dispatch import is_hopper

# Whether quack is installed, found without importing it (a heavy import, done when a run resolves its kernels).
QUACK_INSTALLED = importlib.util.find_spec("quack") is not None

# The pair that imports cleanly and was measured; pyproject.toml's `fa4` extra pins the same versions.
QUACK_PIN = {"quack-kernels": "0.6.5", "nvidia-cutlass-dsl": "4.8.1"}

def _unpinned() -> str | None:
    """Why the installed quack pair is not the pinned one, or None when it is."""
    found = {}
    for distribution in QUACK_PIN:
        try:
            found[distribution] = version(distribution)
        except PackageNotFoundError:
            found[distribution] = "not installed"
    if found == QUACK_PIN:
        return None
    have = ", ".join(f"{d} {v}" for d, v in found.items())
    want = ", ".join(f"{d}=={v}" for d, v in QUACK_PIN.items())
    return f"found {have}; quack's products are used only with {want}"


@functools.cache
def _import_failure() -> str | None:
    """Why quack's gated products cannot be used here (checked once per process), or None."""
    reason = _unpinned()
    if reason is None:
        try:
            import quack.epilogue.library  # noqa: F401 - builds the gated epilogues
            from quack.gemm_interface import gemm_dgated, gemm_gated  # noqa: F401
        except Exception as e:  # any failure means the Triton path
            reason = f"its gated products do not import ({type(e).__name__}: {e})"
    return reason


_warned: list[bool] = []


def quack_mlp_importable(warn: bool = True) -> bool:
    """Whether the pinned quack pair is installed and its gated products import; otherwise, with `warn`, one
    warning per process says why the MLP takes the Triton path."""
    reason = _import_failure()
    if reason is not None and warn and not _warned:
        _warned.append(True)
        warnings.warn(f"quack is installed but not used: {reason}; the MLP takes the Triton path", stacklevel=2)
    return reason is None


def quack_mlp_available(device: torch.device, warn: bool = True) -> bool:
    """Whether an MLP on `device` can take quack's products: a Hopper GPU (where it was measured) and the
    pinned, importable package pair."""
    if device.type != "cuda" or not QUACK_INSTALLED or not is_hopper(device):
        return False
    return quack_mlp_importable(warn)


def quack_mlp_pays(rows: int, d_model: int, hidden: int, dtype: torch.dtype, min_gate_up: int) -> bool:
    """Whether quack's products run, and pay, for an MLP of these sizes: bf16 or fp16, rows of 16-byte
    multiples (their TMA loads), and at least `min_gate_up` elements in the gate/up product."""
    supported = dtype in (torch.bfloat16, torch.float16) and d_model % 8 == 0 and hidden % 8 == 0
    return supported and rows * 2 * hidden >= min_gate_up


def interleave_gate_up(weight: torch.Tensor) -> torch.Tensor:
    """[gate; up] rows -> gate row 0, up row 0, gate row 1, ...: the pairing of quack's gated epilogues."""
    hidden = weight.shape[0] // 2
    return weight.view(2, hidden, -1).transpose(0, 1).reshape(weight.shape)


def swiglu_mlp_quack(x: torch.Tensor, gate_up_weight: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """down(silu(gate) * up) for x [M, d] and weights in the compute dtype, through quack's products."""
    return torch.ops.diffusionlm.swiglu_mlp_quack(x, interleave_gate_up(gate_up_weight), down_weight)[0]


@torch.library.custom_op("diffusionlm::swiglu_mlp_quack", mutates_args=())
def _mlp_op(x: torch.Tensor, gate_up_interleaved: torch.Tensor, down_weight: torch.Tensor,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    from quack.gemm_interface import gemm_gated

    gate_up, hidden = gemm_gated(x, gate_up_interleaved.t(), activation="swiglu")
    return hidden @ down_weight.t(), gate_up  # gate_up: interleaved, kept for the backward


@_mlp_op.register_fake
def _(x: torch.Tensor, gate_up_interleaved: torch.Tensor, down_weight: torch.Tensor,
      ) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape[0], down_weight.shape[0]), x.new_empty(x.shape[0], gate_up_interleaved.shape[0])


@torch.library.custom_op("diffusionlm::swiglu_mlp_quack_backward", mutates_args=())
def _mlp_backward_op(grad_y: torch.Tensor, x: torch.Tensor, gate_up_interleaved: torch.Tensor,
                     down_weight: torch.Tensor, gate_up: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from quack.gemm_interface import gemm_dgated

    grad_gate_up, hidden = gemm_dgated(grad_y, down_weight, gate_up, activation="swiglu")
    return grad_gate_up @ gate_up_interleaved, grad_gate_up.t() @ x, grad_y.t() @ hidden


@_mlp_backward_op.register_fake
def _(grad_y: torch.Tensor, x: torch.Tensor, gate_up_interleaved: torch.Tensor, down_weight: torch.Tensor,
      gate_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(gate_up_interleaved), torch.empty_like(down_weight)


def _setup(ctx: Any, inputs: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    ctx.save_for_backward(*inputs, output[1])


def _backward(ctx: Any, grad_y: torch.Tensor, _grad_gate_up: Any) -> tuple[torch.Tensor, ...]:
    x, gate_up_interleaved, down_weight, gate_up = ctx.saved_tensors
    return torch.ops.diffusionlm.swiglu_mlp_quack_backward(grad_y.contiguous(), x, gate_up_interleaved,
                                                           down_weight, gate_up)


_mlp_op.register_autograd(_backward, setup_context=_setup)
