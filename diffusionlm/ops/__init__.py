"""Fused kernels with pure-PyTorch fallbacks of the same semantics.

Each function runs Triton kernels (`triton_kernels.py`, `triton_mlp.py`) on CUDA tensors when Triton is
installed, and a plain PyTorch reference of the same semantics everywhere else (CPU, or
`DIFFUSIONLM_TRITON=0` for comparisons; see `dispatch.triton_enabled`). The kernels are registered as torch
custom ops, so torch.compile calls them as single kernels inside its graphs. Model and loss code call these
functions and know nothing of which path runs:
- `swiglu`, `swiglu_mlp`: silu(gate) * up on the fused [gate | up] product, and the whole MLP with the
  SwiGLU backward fused into a product's epilogue on sm90+ (swiglu.py, triton_mlp.py), or on Hopper with
  quack installed both SwiGLU passes in quack's product epilogues (quack_mlp.py; DIFFUSIONLM_MLP=triton
  turns it off);
- `rotary_qkv`: rotary embedding of the fused q/k/v projection, one-pass backward (rotary.py);
- `row_cross_entropy`: cross-entropy statistics of logit rows in one read (cross_entropy.py);
- `attention`, `rotary_attention`: SDPA over [B, T, H, D] tensors (after rotary embedding of a fused
  projection), with FlashAttention-4's backward on Hopper when it is installed and pays (attention.py;
  DIFFUSIONLM_ATTENTION=sdpa turns it off).
"""

from diffusionlm.ops.attention import (
    attention,
    attention_reference,
    fa4_backward_available,
    fa4_backward_enabled,
    fa4_backward_pays,
    rotary_attention,
    training_attention_path,
)
from diffusionlm.ops.cross_entropy import row_cross_entropy, row_cross_entropy_reference
from diffusionlm.ops.dispatch import HAVE_TRITON, triton_enabled
from diffusionlm.ops.quack_mlp import quack_mlp_available, quack_mlp_enabled
from diffusionlm.ops.rotary import rotary_qkv, rotary_qkv_reference, rotate_back_qk_
from diffusionlm.ops.swiglu import swiglu, swiglu_mlp, swiglu_mlp_reference, swiglu_reference, training_mlp_path

__all__ = [
    "HAVE_TRITON",
    "attention",
    "attention_reference",
    "fa4_backward_available",
    "fa4_backward_enabled",
    "fa4_backward_pays",
    "quack_mlp_available",
    "quack_mlp_enabled",
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
    "triton_enabled",
]
