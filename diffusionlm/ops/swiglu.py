"""SwiGLU on a fused [gate | up] product: one kernel each way on GPUs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from diffusionlm.ops.dispatch import cdiv, triton_enabled, triton_kernels

_BLOCK = 1024


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
    triton_kernels().swiglu_forward_kernel[(cdiv(n, _BLOCK),)](gate_up, out, n, hidden, BLOCK=_BLOCK)
    return out


@_swiglu_op.register_fake
def _(gate_up: torch.Tensor) -> torch.Tensor:
    return gate_up.new_empty(*gate_up.shape[:-1], gate_up.shape[-1] // 2)


@torch.library.custom_op("diffusionlm::swiglu_backward", mutates_args=())
def _swiglu_backward_op(gate_up: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    grad_gate_up = torch.empty_like(gate_up)
    n = grad.numel()
    triton_kernels().swiglu_backward_kernel[(cdiv(n, _BLOCK),)](gate_up, grad, grad_gate_up, n,
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
