"""Triton kernels behind `diffusionlm.ops`. Imported only where Triton is installed.

Each kernel does in one pass over memory what the compiler's generated code does in more:
- SwiGLU on the fused [gate | up] product: the backward reads gate, up and the incoming gradient once
  and writes both halves of the product's gradient (the compiled concatenation reads them twice).
- Row cross-entropy statistics: logsumexp by the online (running max) recurrence, the argmax and the
  target's logit in a single read of the logits (the compiled reduction reads them twice).
- Rotary backward: the q and k gradients rotated back and the v gradient, interleaved into the fused
  projection's gradient in one pass; or, where attention's backward already wrote all three into that
  gradient, the q and k parts rotated back in place.
All arithmetic is fp32; results are rounded once to the output dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def swiglu_forward_kernel(gate_up_ptr, out_ptr, n_elements, hidden, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    row, col = offsets // hidden, offsets % hidden
    gate = tl.load(gate_up_ptr + row * 2 * hidden + col, mask=mask).to(tl.float32)
    up = tl.load(gate_up_ptr + row * 2 * hidden + hidden + col, mask=mask).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def swiglu_backward_kernel(gate_up_ptr, grad_ptr, grad_gate_up_ptr, n_elements, hidden, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    row, col = offsets // hidden, offsets % hidden
    gate_at = row * 2 * hidden + col
    gate = tl.load(gate_up_ptr + gate_at, mask=mask).to(tl.float32)
    up = tl.load(gate_up_ptr + gate_at + hidden, mask=mask).to(tl.float32)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    sig = tl.sigmoid(gate)
    # d silu(g) / dg = sig + g * sig * (1 - sig)
    grad_gate = grad * up * sig * (1.0 + gate * (1.0 - sig))
    grad_up = grad * gate * sig
    dtype = grad_gate_up_ptr.dtype.element_ty
    tl.store(grad_gate_up_ptr + gate_at, grad_gate.to(dtype), mask=mask)
    tl.store(grad_gate_up_ptr + gate_at + hidden, grad_up.to(dtype), mask=mask)


@triton.jit
def row_cross_entropy_kernel(logits_ptr, targets_ptr, loss_ptr, lse_ptr, argmax_ptr, n_cols, row_stride,
                             BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * row_stride
    running_max = tl.full((), -float("inf"), tl.float32)
    running_sum = tl.zeros((), tl.float32)
    best = tl.zeros((), tl.int32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        z = tl.load(base + cols, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
        block_max = tl.max(z, axis=0)
        # first index of the block's maximum; a later block wins only with a strictly larger value, so the
        # result is the first maximal index of the row, as torch.argmax gives
        block_best = tl.min(tl.where(z == block_max, cols, n_cols), axis=0)
        best = tl.where(block_max > running_max, block_best, best)
        new_max = tl.maximum(running_max, block_max)
        # exponents relative to the running maximum; while it is still -inf (leading blocks of -inf only)
        # there is nothing to rescale and every term is 0
        shift = tl.where(new_max == -float("inf"), 0.0, new_max)
        rescale = tl.where(running_max == new_max, 1.0, tl.exp(running_max - shift))
        running_sum = running_sum * rescale + tl.sum(tl.exp(z - shift), axis=0)
        running_max = new_max
    lse = running_max + tl.log(running_sum)
    target = tl.load(targets_ptr + row)
    target_logit = tl.load(base + target).to(tl.float32)
    tl.store(loss_ptr + row, lse - target_logit)
    tl.store(lse_ptr + row, lse)
    tl.store(argmax_ptr + row, best.to(tl.int64))



@triton.jit
def rotary_qkv_backward_kernel(grad_q_ptr, grad_k_ptr, grad_v_ptr, cos_ptr, sin_ptr, out_ptr, n_pos, T, HD,
                               sq_b, sq_t, sq_h, sk_b, sk_t, sk_h, sv_b, sv_t, sv_h,
                               HALF: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr):
    """ROWS positions x CHUNK of the H x D elements per program: the q and k gradients rotated back and the
    v gradient, written side by side as each position's [3, H, D] slice of the projection's gradient.

    Each lane loads its element and its rotation partner (the same offset in the other half of the head),
    so every load and store is a contiguous run; the partner loads hit lines already in cache."""
    pos = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    e = tl.program_id(1) * CHUNK + tl.arange(0, CHUNK)
    ok = (pos < n_pos)[:, None] & (e < HD)[None, :]
    b, t = (pos // T).to(tl.int64), pos % T
    head, d = e // (2 * HALF), e % (2 * HALF)
    first = d < HALF
    partner = tl.where(first, d + HALF, d - HALF)
    j = tl.where(first, d, d - HALF)[None, :]
    cos = tl.load(cos_ptr + t[:, None] * HALF + j, mask=ok).to(tl.float32)
    # forward: y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin; its transpose rotates by -angle:
    # x1' = g1 cos + g2 sin, x2' = g2 cos - g1 sin
    sin = tl.load(sin_ptr + t[:, None] * HALF + j, mask=ok).to(tl.float32) * tl.where(first, 1.0, -1.0)[None, :]
    out = out_ptr + pos.to(tl.int64)[:, None] * 3 * HD + e[None, :]
    dtype = out_ptr.dtype.element_ty
    at = grad_q_ptr + (b * sq_b + t * sq_t)[:, None] + (head * sq_h)[None, :]
    g, g_partner = tl.load(at + d[None, :], mask=ok).to(tl.float32), tl.load(at + partner[None, :], mask=ok)
    tl.store(out, (g * cos + g_partner.to(tl.float32) * sin).to(dtype), mask=ok)
    at = grad_k_ptr + (b * sk_b + t * sk_t)[:, None] + (head * sk_h)[None, :]
    g, g_partner = tl.load(at + d[None, :], mask=ok).to(tl.float32), tl.load(at + partner[None, :], mask=ok)
    tl.store(out + HD, (g * cos + g_partner.to(tl.float32) * sin).to(dtype), mask=ok)
    at = grad_v_ptr + (b * sv_b + t * sv_t)[:, None] + (head * sv_h)[None, :]
    tl.store(out + 2 * HD, tl.load(at + d[None, :], mask=ok), mask=ok)


@triton.jit
def rotate_back_qk_inplace_kernel(buf_ptr, cos_ptr, sin_ptr, n_pos, T, HD,
                                  HALF: tl.constexpr, ROWS: tl.constexpr, PAIRS: tl.constexpr):
    """The q and k slots of a [positions, 3, H, D] projection gradient, holding the gradients of the rotated
    q and k, rotated back in place (by -angle: x1' = g1 cos + g2 sin, x2' = g2 cos - g1 sin); the v slot is
    left as it is. ROWS positions x PAIRS of the H x D/2 (d, d + HALF) pairs per program: each lane owns a
    pair, reading and writing both of its elements, so no lane reads what another one writes."""
    pos = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    p = tl.program_id(1) * PAIRS + tl.arange(0, PAIRS)
    ok = (pos < n_pos)[:, None] & (p < HD // 2)[None, :]
    t = pos % T
    head, j = p // HALF, p % HALF
    cos = tl.load(cos_ptr + t[:, None] * HALF + j[None, :], mask=ok).to(tl.float32)
    sin = tl.load(sin_ptr + t[:, None] * HALF + j[None, :], mask=ok).to(tl.float32)
    first = buf_ptr + pos.to(tl.int64)[:, None] * 3 * HD + (head * 2 * HALF + j)[None, :]
    dtype = buf_ptr.dtype.element_ty
    for slot in tl.static_range(2):  # q, then k
        at = first + slot * HD
        g1 = tl.load(at, mask=ok).to(tl.float32)
        g2 = tl.load(at + HALF, mask=ok).to(tl.float32)
        tl.store(at, (g1 * cos + g2 * sin).to(dtype), mask=ok)
        tl.store(at + HALF, (g2 * cos - g1 * sin).to(dtype), mask=ok)
