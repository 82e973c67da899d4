"""Fused kernels with pure-PyTorch fallbacks of the same semantics.

`swiglu` and `row_cross_entropy` run Triton kernels (`triton_kernels.py`) on CUDA tensors when Triton is
installed, and the plain PyTorch expressions below everywhere else (CPU, or `DIFFUSIONLM_TRITON=0` for
comparisons; see `triton_enabled`). The kernels are registered as torch custom ops with their own
backward, so torch.compile calls them as single kernels inside its graphs. Model and loss code call
these functions and know nothing of which path runs.
"""

from diffusionlm.ops.cross_entropy import row_cross_entropy, row_cross_entropy_reference
from diffusionlm.ops.dispatch import HAVE_TRITON, triton_enabled
from diffusionlm.ops.rotary import rotary_qkv, rotary_qkv_reference
from diffusionlm.ops.swiglu import swiglu, swiglu_reference

__all__ = [
           "HAVE_TRITON",
           "rotary_qkv",
           "rotary_qkv_reference",
           "row_cross_entropy",
           "row_cross_entropy_reference",
           "swiglu",
           "swiglu_reference",
           "triton_enabled",
]
