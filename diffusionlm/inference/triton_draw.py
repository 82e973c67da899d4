"""The Triton kernel behind `draw.py`: a candidate token and its confidence for every (row, position) in one read
of the model's logits. Imported only where Triton runs.

The PyTorch path materialises float64 logits, two int64 hash words and a float64 uniform per vocabulary entry
(several [N, V] buffers, each written and read again), and keys each position with a dozen small integer ops;
here each program owns one position, derives its keys from the row's key and the step, walks the vocabulary in
chunks and keeps per-lane running maxima, so the logits are read once, nothing of size [N, V] is written, and a
denoising step's draws are one kernel launch.
The arithmetic is the PyTorch path's, operation for operation, in float64: the same counter-based uniforms
(`streams.py`: lowbias32 words of the position's two keys and the vocabulary index), the same Gumbel noise
-log(-log(u)) added to logits / temperature, argmax with ties to the lowest index, and the confidence
softmax(logits)[token] of the untempered logits.
"""

from __future__ import annotations

import triton
import triton.language as tl

# streams.py's constants: lowbias32's multipliers and the two vocabulary salts
_C1, _C2 = tl.constexpr(0x7FEB352D), tl.constexpr(0x846CA68B)
_SALT0, _SALT1 = tl.constexpr(0x9E3779B9), tl.constexpr(0x85EBCA6B)
_M32 = tl.constexpr(0xFFFFFFFF)
_POS_SALT = tl.constexpr(0x27D4EB2F)


@triton.jit
def _lowbias32(h):
    # uint64 lanes holding values in [0, 2^32): a product of two such values cannot wrap
    h = h ^ (h >> 16)
    h = (h * _C1) & _M32
    h = h ^ (h >> 15)
    h = (h * _C2) & _M32
    return h ^ (h >> 16)


@triton.jit
def draw_kernel(logits_ptr, row_keys_ptr, positions_ptr, tokens_ptr, conf_ptr, per_row, V, mix0, mix1,
                temperature, forbid_a, forbid_b, GREEDY: tl.constexpr, BLOCK_V: tl.constexpr):
    # One program per output row: position `positions[row]` of batch row `row // per_row`. Its two keys are
    # `RowStreams.bases`: lowbias32(lowbias32(row key ^ step mix) ^ lowbias32(position + salt)), per word.
    row = tl.program_id(0).to(tl.int64)
    batch_row = row // per_row
    pos = _lowbias32((tl.load(positions_ptr + row).to(tl.uint64) + _POS_SALT) & _M32)
    key0 = _lowbias32(_lowbias32(tl.load(row_keys_ptr + 2 * batch_row).to(tl.uint64) ^ mix0) ^ pos)
    key1 = _lowbias32(_lowbias32(tl.load(row_keys_ptr + 2 * batch_row + 1).to(tl.uint64) ^ mix1) ^ pos)
    best = tl.full([BLOCK_V], float("-inf"), tl.float64)
    best_at = tl.zeros([BLOCK_V], tl.int64)
    run_max = tl.full([BLOCK_V], float("-inf"), tl.float64)
    run_sum = tl.zeros([BLOCK_V], tl.float64)
    for start in range(0, V, BLOCK_V):
        v = start + tl.arange(0, BLOCK_V).to(tl.int64)
        inside = v < V
        logit = tl.load(logits_ptr + row * V + v, mask=inside, other=float("-inf")).to(tl.float64)
        logit = tl.where((v == forbid_a) | (v == forbid_b), float("-inf"), logit)
        # online logsumexp per lane; a lane that has seen only -inf keeps max -inf and sum 0
        new_max = tl.maximum(run_max, logit)
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.exp(logit - shift)
        run_max = new_max
        if GREEDY:
            score = logit
        else:
            vu = v.to(tl.uint64)
            w0 = _lowbias32(key0 ^ _lowbias32(vu ^ _SALT0))
            w1 = _lowbias32(key1 ^ _lowbias32(vu ^ _SALT1))
            u = (((w0 >> 6) << 26) | (w1 >> 6)).to(tl.float64)
            u = (u + 0.5) * 2.220446049250313e-16  # 2^-52
            score = -tl.log(-tl.log(u)) + logit / temperature
        take = score > best  # strict: on a tie the lane keeps its earlier (lower) index
        best = tl.where(take, score, best)
        best_at = tl.where(take, v, best_at)
    top = tl.max(best, axis=0)
    token = tl.min(tl.where(best == top, best_at, V), axis=0)
    total_max = tl.max(run_max, axis=0)
    total = tl.sum(run_sum * tl.exp(run_max - total_max), axis=0)
    chosen = tl.load(logits_ptr + row * V + token).to(tl.float64)
    tl.store(tokens_ptr + row, token)
    tl.store(conf_ptr + row, tl.exp(chosen - total_max) / total)
