"""Counter-based random numbers: one stream per batch row, so a row's sample never depends on its batch.

A uniform is a pure function of (seed, row, step, stream, position, vocabulary index), computed with integer
tensor ops: no generator state, the same numbers on CPU and CUDA, static shapes (nothing here stops a later
CUDA graph or torch.compile from fusing it), and a row's numbers are the same whether the batch holds 1 or 64
rows or computes logits at a different subset of positions.

The mixing function is Chris Wellons' `lowbias32` 32-bit integer hash. Values live in int64 tensors in
[0, 2^32); every multiplication is done exactly without int64 overflow (`_mul32_`), in place, so a [B, n, V]
draw needs a few buffers of its size. A float64 uniform takes 52 random bits from two independent 32-bit
hashes, so it resolves the tails that the Gumbel trick needs (u up to 1 - 2^-53), unlike a float32 uniform
(24 bits).
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_C1, _C2 = 0x7FEB352D, 0x846CA68B  # lowbias32's multipliers (triton_draw.py repeats them)
_VOCAB_SALT = (0x9E3779B9, 0x85EBCA6B)  # one salt per 32-bit word of a float64 uniform (and triton_draw.py)
_POS_SALT = 0x27D4EB2F  # (and triton_draw.py)

TOKENS = 0  # stream of the categorical (Gumbel) draws, one uniform per vocabulary entry
ORDER = 1  # stream of the per-position draws: which positions to reveal


def _mul32_(h: torch.Tensor, c: int) -> torch.Tensor:
    """h = (h * c) mod 2^32 in place, for h in [0, 2^32), without int64 overflow: c >= 2^31 is split as
    (c - 2^31) + 2^31."""
    if c < 1 << 31:
        return h.mul_(c).bitwise_and_(_M32)
    high = (h & 1).bitwise_left_shift_(31)
    return h.mul_(c - (1 << 31)).add_(high).bitwise_and_(_M32)


def _hash32_(h: torch.Tensor) -> torch.Tensor:
    """lowbias32 in place (h must be a temporary the caller owns)."""
    h.bitwise_xor_(h >> 16)
    _mul32_(h, _C1)
    h.bitwise_xor_(h >> 15)
    _mul32_(h, _C2)
    return h.bitwise_xor_(h >> 16)


def hash32(h: torch.Tensor) -> torch.Tensor:
    """lowbias32 of int64 values in [0, 2^32); a bijection of that range with strong avalanche."""
    return _hash32_(h.clone())


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _py_hash(*parts: int) -> int:
    """A 64-bit hash of a few Python integers (any sign or size)."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (p & _M64))
    return h


class RowStreams:
    """Uniforms for rows `seed`-derived keys; row r's numbers depend only on (seed, r), never on the batch."""

    def __init__(self, seed: int, batch_size: int, device: torch.device | str = "cpu", first_row: int = 0):
        keys = [_py_hash(seed, first_row + r) for r in range(batch_size)]
        # two independent 32-bit keys a row, one for each half of a float64 uniform's bits
        self.keys = torch.tensor([[k & _M32, k >> 32] for k in keys], dtype=torch.int64, device=device)
        self.device = torch.device(device)
        self._vocab_codes: dict[int, list[torch.Tensor]] = {}

    @staticmethod
    def step_mix(step: int, stream: int) -> tuple[int, int]:
        """The two 32-bit words that key (step, stream) in `bases` (what a fused kernel takes instead)."""
        mix = _py_hash(step, stream)
        return mix & _M32, (mix >> 32) & _M32

    def bases(self, step: int, stream: int, positions: torch.Tensor) -> list[torch.Tensor]:
        """Two keys of (row, step, stream, position), one for each 32-bit word of a uniform: [B, n] for positions
        [n] shared by every row, or [B, m] for per-row positions [B, m] (a value depends on the position, never
        on where it sits in the tensor). Python scalars, not new tensors, carry the step: no host-to-device copy
        a step."""
        mix = _py_hash(step, stream)
        pos = _hash32_((positions.to(torch.int64) + _POS_SALT).bitwise_and_(_M32))
        return [_hash32_((_hash32_(self.keys[:, w] ^ ((mix >> 32 * w) & _M32)))[:, None] ^ pos) for w in (0, 1)]

    def _vocab(self, width: int) -> list[torch.Tensor]:
        """Per-index codes [width] for each word, cached."""
        if width not in self._vocab_codes:
            v = torch.arange(width, dtype=torch.int64, device=self.device)
            self._vocab_codes[width] = [_hash32_(v ^ salt) for salt in _VOCAB_SALT]
        return self._vocab_codes[width]

    def uniform(self, step: int, stream: int, positions: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """float64 uniforms in (0, 1), [B, n] (width None) or [B, n, width], for `positions` (see `bases`) at
        denoising step `step`."""
        return self.from_bases(self.bases(step, stream, positions), width)

    def from_bases(self, bases: list[torch.Tensor], width: int | None = None) -> torch.Tensor:
        """The uniforms of `bases`: [...] (width None) or [..., width], one per vocabulary index. Each value has
        52 random bits: (k + 1/2) / 2^52, k uniform in [0, 2^52)."""
        if width is None:
            words = [_hash32_(bases[w] ^ _VOCAB_SALT[w]) for w in (0, 1)]
        else:
            codes = self._vocab(width)
            words = [_hash32_(bases[w][..., None] ^ codes[w]) for w in (0, 1)]
        k = words[0].bitwise_right_shift_(6).bitwise_left_shift_(26).bitwise_or_(words[1].bitwise_right_shift_(6))
        del words
        return k.to(torch.float64).add_(0.5).mul_(2.0**-52)
