"""Fused kernels with pure-PyTorch fallbacks of the same semantics, chosen by one `KernelPolicy`.

`resolve_kernels(cfg.kernels, device)` turns the `[kernels]` section into a `KernelPolicy` once, when a
model is built; model and loss code pass it to these functions and know nothing else of which path runs.
Triton kernels (`triton_kernels.py`, `triton_mlp.py`) are registered as torch custom ops, so torch.compile
calls them as single kernels inside its graphs; each has a PyTorch reference of the same semantics that
runs on CPUs, with `kernels.triton = "off"`, and in the tests as the definition it is checked against.
- `swiglu`, `swiglu_mlp`: silu(gate) * up on the fused [gate | up] product, and the whole MLP with the
  SwiGLU backward fused into a product's epilogue on sm90+ (swiglu.py, triton_mlp.py), or on Hopper with
  the pinned quack both SwiGLU passes in quack's product epilogues (quack_mlp.py);
- `rotary_qkv`: rotary embedding of the fused q/k/v projection, one-pass backward (rotary.py);
- `row_cross_entropy`, `cross_entropy_rows`: cross-entropy statistics of logit rows in one read, and the
  differentiable per-row cross-entropy built on them (cross_entropy.py);
- `attention`, `rotary_attention`: SDPA over [B, T, H, D] tensors (after rotary embedding of a fused
  projection), with FlashAttention-4's backward on Hopper where it is installed and pays (attention.py).
"""

from diffusionlm.ops.attention import (
    FA4_INSTALLED,
    attention,
    attention_reference,
    fa4_backward_enabled,
    fa4_backward_pays,
    rotary_attention,
    training_attention_path,
)
from diffusionlm.ops.cross_entropy import cross_entropy_rows, row_cross_entropy, row_cross_entropy_reference
from diffusionlm.ops.dispatch import HAVE_TRITON
from diffusionlm.ops.policy import PYTORCH, KernelPolicy, KernelUnavailable, resolve_kernels
from diffusionlm.ops.quack_mlp import QUACK_PIN, quack_mlp_available, quack_mlp_pays
from diffusionlm.ops.rotary import rotary_qkv, rotary_qkv_reference, rotate_back_qk_
from diffusionlm.ops.swiglu import swiglu, swiglu_mlp, swiglu_mlp_reference, swiglu_reference, training_mlp_path

__all__ = [
    "FA4_INSTALLED",
    "HAVE_TRITON",
    "PYTORCH",
    "QUACK_PIN",
    "KernelPolicy",
    "KernelUnavailable",
    "attention",
    "attention_reference",
    "cross_entropy_rows",
    "fa4_backward_enabled",
    "fa4_backward_pays",
    "quack_mlp_available",
    "quack_mlp_pays",
    "resolve_kernels",
    "rotary_attention",
    "rotary_qkv",
    "rotary_qkv_reference",
    "rotate_back_qk_",
    "row_cross_entropy",
    "row_cross_entropy_reference",
    "swiglu",
    "swiglu_mlp",
    "swiglu_mlp_reference",
    "swiglu_reference",
    "training_attention_path",
    "training_mlp_path",
]
