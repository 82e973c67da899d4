"""Scaled dot-product attention over [B, T, H, D] tensors, with FlashAttention-4's backward on Hopper.

Everywhere, attention is `F.scaled_dot_product_attention` on transposed views: the fused kernels take
strided inputs and return the output (and, backwards, the gradients) in the query's memory order, so the
[B, T, H, D] layout of the q/k/v projection is never copied.

On Hopper GPUs with FlashAttention-4 installed (the `flash-attn-4` package: CuTe DSL kernels, compiled on
first use), a training step takes cuDNN's forward and FlashAttention-4's backward. At base's shape
(64 x 1024 tokens, 12 heads of 64) on an H100, cuDNN's forward took 0.46 ms against FlashAttention-4's
0.51 ms, and FlashAttention-4's backward 1.27 ms against cuDNN's 1.47 ms (benchmarking/results/
microbench_kernels_h100_2026-11-22.json). The two compute the same function and share what the
backward needs: the output and the per-row natural-log logsumexp of the scaled scores.

Taken where `[kernels] attention` resolves to "fa4" (ops/policy.py), and per call only where it is exact and
pays: grads wanted, no padding mask (packed batches have none), bf16 or fp16, head size a multiple of 8 up to
256, at least the policy's `fa4_min_scores` scores per call.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from diffusionlm.ops.dispatch import package_label
from diffusionlm.ops.policy import PYTORCH, KernelPolicy
from diffusionlm.ops.rotary import rotary_qkv, rotary_qkv_reference, rotate_back_qk_


def fa4_installed() -> bool:
    """Whether FlashAttention-4's CuTe kernels are importable, found without importing them (a heavy
    import: several seconds, done on the first backward). FlashAttention-2's `flash_attn` has no `cute`."""
    spec = importlib.util.find_spec("flash_attn")
    locations = spec.submodule_search_locations if spec is not None else None
    return bool(locations) and any((Path(p) / "cute" / "interface.py").is_file() for p in locations)


# Decided once, at import: torch.compile then reads a constant instead of breaking its graph on the lookup.
FA4_INSTALLED = fa4_installed()


def fa4_backward_pays(shape: tuple[int, int, int, int], dtype: torch.dtype, min_scores: int) -> bool:
    """Whether FlashAttention-4's backward runs, and pays, for q of `shape` [B, T, H, D] and `dtype`: it is
    prepared and launched from Python on every call, which only calls of at least `min_scores` scores hide."""
    B, T, H, D = shape
    supported = dtype in (torch.bfloat16, torch.float16) and D % 8 == 0 and D <= 256
    return supported and min_scores <= B * H * T * T


def fa4_backward_enabled(q: torch.Tensor, key_mask: torch.Tensor | None, kernels: KernelPolicy) -> bool:
    """Whether attention over `q` [B, T, H, D] takes cuDNN's forward and FlashAttention-4's backward."""
    if kernels.attention != "fa4" or key_mask is not None:
        return False
    if not (torch.is_grad_enabled() and q.requires_grad):
        return False
    return fa4_backward_pays(tuple(q.shape), q.dtype, kernels.fa4_min_scores)


def training_attention_path(kernels: KernelPolicy, shape: tuple[int, int, int, int], dtype: torch.dtype) -> str:
    """What a training step's unpadded attention over q of `shape` [B, T, H, D] runs, in words (for records)."""
    if not (kernels.attention == "fa4" and fa4_backward_pays(shape, dtype, kernels.fa4_min_scores)):
        return "sdpa"
    return f"cudnn forward, {package_label('flash-attn-4')} backward"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              key_mask: torch.Tensor | None = None, kernels: KernelPolicy = PYTORCH,
              attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v per head, for q, k, v [B, T, H, D] (strided views welcome).

    key_mask: bool, broadcastable to [B, H, T, T] (in practice [B, 1, 1, T]), False where a key is padding.
    causal: queries attend to keys at or before their position (combined with key_mask when both are given).
    attn_mask: bool [T, T] shared by the batch and heads, True where query i may attend key j (a structured
    mask such as block diffusion's); combined with key_mask and causal. It always takes SDPA with a dense
    boolean mask. On GPUs, FlexAttention with a block mask (skipping fully masked tiles) is the fast path
    still to add for it; it is not built.
    Returns [B, T, H, D].
    """
    if attn_mask is not None:
        mask = attn_mask if key_mask is None else attn_mask & key_mask  # [T, T] or [B, 1, T, T]
        return attention_reference(q, k, v, causal, mask)
    if fa4_backward_enabled(q, key_mask, kernels):
        return torch.ops.diffusionlm.attention_cudnn_fa4(q, k, v, causal)[0]
    return attention_reference(q, k, v, causal, key_mask)


def rotary_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, causal: bool = False,
                     key_mask: torch.Tensor | None = None, kernels: KernelPolicy = PYTORCH,
                     attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Rotary embedding of q and k (`ops.rotary_qkv`), then `attention`, for a projection viewed as
    [B, T, 3, H, D]; returns [B, T, H, D]. `attn_mask` (bool [T, T], True = may attend) is `attention`'s.

    On the FlashAttention-4 path (with Triton), the backward has FlashAttention-4 write the three gradients
    straight into the projection's gradient and rotates its q and k parts back in place: one pass less over
    that gradient than rotating separate gradients into it.
    """
    q_view = qkv.select(2, 0)
    if attn_mask is None and fa4_backward_enabled(q_view, key_mask, kernels) and kernels.uses_triton(qkv):
        return _RotaryAttention.apply(qkv, cos, sin, causal)
    q, k, v = rotary_qkv(qkv, cos, sin, kernels)
    return attention(q, k, v, causal=causal, key_mask=key_mask, kernels=kernels, attn_mask=attn_mask)


class _RotaryAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, causal: bool) -> torch.Tensor:
        q, k, v = rotary_qkv_reference(qkv, cos, sin)
        out, lse = torch.ops.diffusionlm.attention_cudnn_fa4(q, k, v, causal)
        ctx.save_for_backward(q, k, v, out, lse, cos, sin)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        q, k, v, out, lse, cos, sin = ctx.saved_tensors
        grad_qkv = torch.ops.diffusionlm.rotary_attention_fa4_backward(grad_out, q, k, v, out, lse, cos, sin,
                                                                        ctx.causal)
        return grad_qkv, None, None, None


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                        key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The SDPA path (any device, any mask)."""
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if causal and key_mask is not None:
        T = q.shape[-2]
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril() & key_mask
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=causal)
    return y.transpose(1, 2)


@torch.library.custom_op("diffusionlm::attention_cudnn_fa4", mutates_args=())
def _attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(output [B, T, H, D], logsumexp [B, H, T] fp32) from cuDNN's fused forward."""
    B, T, H, _ = q.shape
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True, 0.0, causal, False)[:2]
    # cuDNN writes the output in the query's memory order: [B, T, H, D] here, returned as that tensor
    return out.transpose(1, 2).contiguous(), lse.reshape(B, H, T).contiguous()


@_attention_fwd.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, H, D = q.shape
    return q.new_empty(B, T, H, D), q.new_empty(B, H, T, dtype=torch.float32)


def _fa4_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                  lse: torch.Tensor, causal: bool, **grads_into: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """FlashAttention-4's backward: (dq, dk, dv), written into `grads_into` (dq=, dk=, dv=) where given.
    The one call of its interface's `_flash_attn_bwd` (torch's own FA4 registration calls it too)."""
    from flash_attn.cute.interface import _flash_attn_bwd

    return _flash_attn_bwd(q, k, v, out, grad_out.contiguous(), lse, causal=causal, **grads_into)


@torch.library.custom_op("diffusionlm::attention_fa4_backward", mutates_args=())
def _attention_bwd(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                   lse: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = _fa4_backward(grad_out, q, k, v, out, lse, causal)
    return dq, dk, dv


@_attention_bwd.register_fake
def _(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
      lse: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    q, k, v, causal = inputs
    ctx.save_for_backward(q, k, v, *output)
    ctx.causal = causal


def _backward(ctx: Any, grad_out: torch.Tensor, _grad_lse: Any) -> tuple[Any, ...]:
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.diffusionlm.attention_fa4_backward(grad_out, q, k, v, out, lse, ctx.causal)
    return dq, dk, dv, None


_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("diffusionlm::rotary_attention_fa4_backward", mutates_args=())
def _rotary_attention_bwd(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          out: torch.Tensor, lse: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                          causal: bool) -> torch.Tensor:
    """The projection's gradient [B, T, 3, H, D]: FlashAttention-4 writes dq, dk, dv into its three parts,
    then the q and k parts are rotated back in place."""
    B, T, H, D = q.shape
    grad_qkv = q.new_empty(B, T, 3, H, D)
    _fa4_backward(grad_out, q, k, v, out, lse, causal, dq=grad_qkv[:, :, 0], dk=grad_qkv[:, :, 1],
                  dv=grad_qkv[:, :, 2])
    return rotate_back_qk_(grad_qkv, cos, sin)


@_rotary_attention_bwd.register_fake
def _(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
      lse: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, causal: bool) -> torch.Tensor:
    B, T, H, D = q.shape
    return q.new_empty(B, T, 3, H, D)
