"""Fused kernels with pure-PyTorch fallbacks of the same semantics.

`swiglu` and `row_cross_entropy` run Triton kernels (`triton_kernels.py`) on CUDA tensors when Triton is
installed, and the plain PyTorch expressions below everywhere else (CPU, or `DIFFUSIONLM_TRITON=0` for
comparisons; see `triton_enabled`). The kernels are registered as torch custom ops with their own
backward, so torch.compile calls them as single kernels inside its graphs. Model and loss code call
these functions and know nothing of which path runs.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

# Whether Triton is installed, without importing it (a heavy import, done on a kernel's first launch).
HAVE_TRITON = importlib.util.find_spec("triton") is not None


def _triton_kernels() -> ModuleType:
    from diffusionlm.ops import triton_kernels

    return triton_kernels


_TRITON_MODES = ("auto", "1", "0", "interpret")
_BLOCK = 1024
_CE_BLOCK = 4096


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


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


# ---------------------------------------------------------------- SwiGLU
def swiglu_reference(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for a product laid out as [..., gate | up] (last dimension 2 x hidden)."""
    if triton_enabled(gate_up):
        return torch.ops.diffusionlm.swiglu(gate_up.contiguous())
    return swiglu_reference(gate_up)


@torch.library.custom_op("diffusionlm::swiglu", mutates_args=())
def _swiglu_op(gate_up: torch.Tensor) -> torch.Tensor:
    hidden = gate_up.shape[-1] // 2
    out = gate_up.new_empty(*gate_up.shape[:-1], hidden)
    n = out.numel()
    _triton_kernels().swiglu_forward_kernel[(_cdiv(n, _BLOCK),)](gate_up, out, n, hidden, BLOCK=_BLOCK)
    return out


@_swiglu_op.register_fake
def _(gate_up: torch.Tensor) -> torch.Tensor:
    return gate_up.new_empty(*gate_up.shape[:-1], gate_up.shape[-1] // 2)


@torch.library.custom_op("diffusionlm::swiglu_backward", mutates_args=())
def _swiglu_backward_op(gate_up: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    grad_gate_up = torch.empty_like(gate_up)
    n = grad.numel()
    _triton_kernels().swiglu_backward_kernel[(_cdiv(n, _BLOCK),)](gate_up, grad, grad_gate_up, n,
                                                                   gate_up.shape[-1] // 2, BLOCK=_BLOCK)
    return grad_gate_up


@_swiglu_backward_op.register_fake
def _(gate_up: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(gate_up)


def _swiglu_setup(ctx: Any, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
    ctx.save_for_backward(inputs[0])


def _swiglu_backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
    (gate_up,) = ctx.saved_tensors
    return torch.ops.diffusionlm.swiglu_backward(gate_up, grad.contiguous())


_swiglu_op.register_autograd(_swiglu_backward, setup_context=_swiglu_setup)


# ---------------------------------------------------------------- cross-entropy statistics
def row_cross_entropy_reference(logits: torch.Tensor, targets: torch.Tensor,
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1)
    return lse - z.gather(-1, targets[:, None]).squeeze(-1), lse, z.argmax(-1)


def row_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of `logits` [N, V] against `targets` [N]: (fp32 cross-entropy, fp32 logsumexp, argmax).
    No gradient: the caller owns the backward (softmax minus one-hot, from the logsumexp)."""
    if triton_enabled(logits):
        return torch.ops.diffusionlm.row_cross_entropy(logits, targets)
    return row_cross_entropy_reference(logits, targets)


@torch.library.custom_op("diffusionlm::row_cross_entropy", mutates_args=())
def _row_cross_entropy_op(logits: torch.Tensor, targets: torch.Tensor,
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_rows, n_cols = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    loss = logits.new_empty(n_rows, dtype=torch.float32)
    lse = torch.empty_like(loss)
    argmax = logits.new_empty(n_rows, dtype=torch.int64)
    if n_rows:
        _triton_kernels().row_cross_entropy_kernel[(n_rows,)](logits, targets, loss, lse, argmax, n_cols,
                                                              logits.stride(0), BLOCK=_CE_BLOCK)
    return loss, lse, argmax


@_row_cross_entropy_op.register_fake
def _(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_rows = logits.shape[0]
    return (logits.new_empty(n_rows, dtype=torch.float32), logits.new_empty(n_rows, dtype=torch.float32),
            logits.new_empty(n_rows, dtype=torch.int64))
