"""Triton kernel for the SwiGLU MLP's backward: the down projection's input gradient with the SwiGLU
backward in its epilogue. Imported only where Triton is installed; used on GPUs with TMA (sm90+).

grad_y @ W_down gives the gradient of the hidden activation one [BM, BN] tile at a time; while the tile is
in registers the epilogue reads that tile's gate and up values and writes the gradient of [gate | up]
directly, so the hidden gradient is never written to memory and read back (2 x 268 MB per layer at base's
shapes). Persistent (one program per SM, `flatten` lets the compiler overlap a tile's epilogue with the
next tile's loads), with TMA descriptors for every operand.

The product accumulates in fp32 and is rounded to the storage dtype before the element-wise math, exactly
as the unfused path (cuBLAS product, then `swiglu_backward_kernel`) computes it. DOT_F32 runs the product
in full fp32: for fp32 operands (which tl.dot would otherwise take as TF32, where PyTorch's products are
full fp32), and in Triton's CPU interpreter (the tests' path), which gets bf16 products wrong, while
bf16 x bf16 products are exact in fp32, so it is the same math.
"""

from __future__ import annotations

import triton
import triton.language as tl


def set_blocks(nargs: dict) -> None:
    # descriptors are made on the host before the autotuner picks a config; each names its tile here
    bm, bn, bk = nargs["BM"], nargs["BN"], nargs["BK"]
    nargs["grad_desc"].block_shape = [bm, bk]
    nargs["w_desc"].block_shape = [bk, bn]
    for name in ("gate_desc", "up_desc", "grad_gate_desc", "grad_up_desc"):
        nargs[name].block_shape = [bm, bn]


# (BM, BN, BK, GROUP_M, stages, warps). At base's shapes on an H100 (65,536 x 768 @ 768 x 2048) sweeps of
# tiles (including two sub-accumulators sharing each A tile), stages, warps, group sizes, persistent or not,
# Triton's warp specialization, and prefetching the epilogue's operands put persistent 128 x 128 x 64 with 5
# stages and 8 warps first; groups of 4 row tiles edged out 8 (0.622 against 0.633 ms; cuBLAS + the SwiGLU
# kernel: 0.757). BN = 64 serves narrower MLPs.
CONFIGS = [(128, 128, 64, 4, 5, 8), (128, 128, 64, 8, 5, 8), (128, 128, 64, 8, 4, 8), (128, 128, 64, 8, 3, 8),
           (128, 64, 64, 8, 3, 4)]


@triton.autotune(configs=[triton.Config({"BM": bm, "BN": bn, "BK": bk, "GROUP_M": gm}, num_stages=s, num_warps=w,
                                        pre_hook=set_blocks) for bm, bn, bk, gm, s, w in CONFIGS],
                 key=["M", "N", "K"])
@triton.jit
def down_grad_swiglu_backward_kernel(grad_desc, w_desc, gate_desc, up_desc, grad_gate_desc, grad_up_desc, M, N, K,
                                     n_programs,
                                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                                     DOT_F32: tl.constexpr):
    """grad [M, K] @ w [K, N] = gradient of hidden [M, N]; with gate and up [M, N] (the two halves of the
    [gate | up] product, each its own descriptor so that edge tiles clip at N), writes their gradients
    grad * up * silu'(gate) and grad * silu(gate)."""
    tiles_m, tiles_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    dtype = grad_gate_desc.dtype
    for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, n_programs, flatten=True):
        # grouped order: GROUP_M row tiles walk the column tiles together, keeping operand tiles in L2
        per_group = GROUP_M * tiles_n
        first_m = (tile // per_group) * GROUP_M
        group_rows = min(tiles_m - first_m, GROUP_M)
        m0 = (first_m + (tile % per_group) % group_rows) * BM
        n0 = ((tile % per_group) // group_rows) * BN
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BK)):
            a, b = grad_desc.load([m0, k * BK]), w_desc.load([k * BK, n0])
            if DOT_F32:  # full fp32 products, as PyTorch's default: tl.dot would take TF32 for fp32 operands
                acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc)
        grad = acc.to(dtype).to(tl.float32)
        gate = gate_desc.load([m0, n0]).to(tl.float32)
        up = up_desc.load([m0, n0]).to(tl.float32)
        sig = tl.sigmoid(gate)
        # d silu(g) / dg = sig + g * sig * (1 - sig)
        grad_gate_desc.store([m0, n0], (grad * up * sig * (1.0 + gate * (1.0 - sig))).to(dtype))
        grad_up_desc.store([m0, n0], (grad * gate * sig).to(dtype))
