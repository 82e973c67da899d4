"""SwiGLU on a fused [gate | up] product: one kernel each way on GPUs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from diffusionlm.ops.dispatch import cdiv, package_label, triton_kernels
from diffusionlm.ops.policy import PYTORCH, KernelPolicy
from diffusionlm.ops.quack_mlp import quack_mlp_pays, swiglu_mlp_quack

_BLOCK = 1024


def swiglu_reference(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def swiglu(gate_up: torch.Tensor, kernels: KernelPolicy = PYTORCH) -> torch.Tensor:
    """silu(gate) * up for a product laid out as [..., gate | up] (last dimension 2 x hidden)."""
    if kernels.mlp != "pytorch" and kernels.uses_triton(gate_up):
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


# ---------------------------------------------------------------- the whole MLP
def swiglu_mlp_reference(x: torch.Tensor, gate_up_weight: torch.Tensor, down_weight: torch.Tensor,
                         kernels: KernelPolicy = PYTORCH) -> torch.Tensor:
    return F.linear(swiglu(F.linear(x, gate_up_weight), kernels), down_weight)


def swiglu_mlp(x: torch.Tensor, gate_up_weight: torch.Tensor, down_weight: torch.Tensor,
               kernels: KernelPolicy = PYTORCH) -> torch.Tensor:
    """A block's MLP: down(silu(gate) * up) with [gate | up] = x @ gate_up_weight^T (bias-free linears).

    On GPUs with TMA (sm90+) its backward runs the down projection's input gradient with the SwiGLU
    backward in the product's epilogue (`triton_mlp.py`), which never writes the hidden gradient; the
    forward and the other three products are the same cuBLAS calls and SwiGLU kernel as the plain
    composition, which runs everywhere else (and without gradients). On Hopper with quack installed, both
    SwiGLU passes ride in quack's product epilogues instead (`quack_mlp.py`). Under autocast the products
    run in the autocast dtype, as linear layers would.
    """
    if not (torch.is_grad_enabled() and kernels.mlp != "pytorch" and kernels.uses_triton(x) and _has_tma(x)):
        return swiglu_mlp_reference(x, gate_up_weight, down_weight, kernels)
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    x2d = x.reshape(-1, x.shape[-1]).to(dtype)
    gate_up_weight, down_weight = gate_up_weight.to(dtype), down_weight.to(dtype)
    if kernels.mlp == "quack" and quack_mlp_pays(x2d.shape[0], x2d.shape[1], down_weight.shape[1], x2d.dtype,
                                                 kernels.quack_min_gate_up):
        y = swiglu_mlp_quack(x2d, gate_up_weight, down_weight)
    else:
        y = _SwiGLUMLP.apply(x2d, gate_up_weight, down_weight)
    return y.view(*x.shape[:-1], y.shape[-1])


def training_mlp_path(kernels: KernelPolicy, device: torch.device, rows: int, d_model: int, hidden: int,
                      dtype: torch.dtype) -> str:
    """What a training step's MLP over `rows` positions runs on `device`, in words (for benchmark records)."""
    if kernels.mlp == "pytorch" or not (device.type == "cuda" and kernels.triton == "on"):
        return "pytorch"
    if not (torch.cuda.get_device_capability(device)[0] >= 9):
        return "cuBLAS + Triton SwiGLU kernels"
    if kernels.mlp == "quack" and quack_mlp_pays(rows, d_model, hidden, dtype, kernels.quack_min_gate_up):
        return f"{package_label('quack-kernels')} gated products"
    return "cuBLAS + Triton SwiGLU forward, Triton fused backward product"


def _has_tma(x: torch.Tensor) -> bool:
    """sm90+ GPUs, or Triton's interpreter (CPU tensors reach Triton kernels only through it)."""
    return not x.is_cuda or torch.cuda.get_device_capability(x.device)[0] >= 9


class _SwiGLUMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gate_up_weight: torch.Tensor, down_weight: torch.Tensor,
                ) -> torch.Tensor:
        gate_up = x @ gate_up_weight.t()
        hidden = torch.ops.diffusionlm.swiglu(gate_up)
        ctx.save_for_backward(x, gate_up_weight, down_weight, gate_up, hidden)
        return hidden @ down_weight.t()

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, gate_up_weight, down_weight, gate_up, hidden = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_gate_up = torch.ops.diffusionlm.down_grad_swiglu_backward(grad_y, down_weight, gate_up)
        return grad_gate_up @ gate_up_weight, grad_gate_up.t() @ x, grad_y.t() @ hidden


@torch.library.custom_op("diffusionlm::down_grad_swiglu_backward", mutates_args=())
def _down_grad_swiglu_backward_op(grad_y: torch.Tensor, down_weight: torch.Tensor, gate_up: torch.Tensor,
                                  ) -> torch.Tensor:
    from triton.tools.tensor_descriptor import TensorDescriptor

    from diffusionlm.ops import triton_mlp

    (M, K), N = grad_y.shape, down_weight.shape[1]
    grad_gate_up = torch.empty_like(gate_up)
    # block shapes are placeholders until the autotuner's pre-hook sets them from the chosen config
    descs = {name: TensorDescriptor.from_tensor(t, [1, 1]) for name, t in (
        ("grad_desc", grad_y), ("w_desc", down_weight.contiguous()), ("gate_desc", gate_up[:, :N]),
        ("up_desc", gate_up[:, N:]), ("grad_gate_desc", grad_gate_up[:, :N]), ("grad_up_desc", grad_gate_up[:, N:]))}
    kernel = triton_mlp.down_grad_swiglu_backward_kernel
    interpreting = not grad_y.is_cuda  # CPU tensors reach this kernel only through Triton's interpreter
    n_sms = 4 if interpreting else torch.cuda.get_device_properties(grad_y.device).multi_processor_count

    def grid(meta: dict) -> tuple[int]:
        return (min(n_sms, cdiv(M, meta["BM"]) * cdiv(N, meta["BN"])),)

    if interpreting:  # the interpreter cannot benchmark configs: one small config, set by hand
        config = {"BM": 32, "BN": 32, "BK": 16, "GROUP_M": 2}
        triton_mlp.set_blocks({**descs, **config})
        kernel.fn[grid(config)](*descs.values(), M, N, K, n_sms, **config, DOT_F32=True)
    else:
        kernel[grid](*descs.values(), M, N, K, n_sms, DOT_F32=grad_y.dtype == torch.float32)
    return grad_gate_up


@_down_grad_swiglu_backward_op.register_fake
def _(grad_y: torch.Tensor, down_weight: torch.Tensor, gate_up: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(gate_up)
