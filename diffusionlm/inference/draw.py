"""Candidate tokens and their confidence from the model's logits at a step's positions: the one place that turns
logits into draws, with a fused Triton kernel (`triton_draw.py`) and a PyTorch path of the same arithmetic.

The kernel runs when the kernel policy sends the logits to Triton and no top-k / top-p filter is asked for (those
need a sort of the vocabulary, which the PyTorch path does); elsewhere, where the policy has the compiled csrc/
ops (`[kernels] csrc`, e.g. on a Jetson without Triton), their `diffusionlm::draw` does the same pass. All paths
draw the same tokens from the same counter-based uniforms, up to the rounding of float64 `log` and `exp` in the
math libraries.
"""

from __future__ import annotations

import torch

from diffusionlm.inference.categorical import forbid, sample_tokens
from diffusionlm.inference.settings import SamplerSettings
from diffusionlm.inference.streams import TOKENS, RowStreams
from diffusionlm.ops import csrc
from diffusionlm.ops.policy import KernelPolicy

_BLOCK_V = 1024


class Drawer:
    """Draws for one generation: its settings, random streams and forbidden ids, and the path chosen once."""

    def __init__(self, settings: SamplerSettings, streams: RowStreams, forbidden: tuple[int, int],
                 kernels: KernelPolicy, device: torch.device):
        self.settings, self.streams, self.forbidden = settings, streams, forbidden
        self.forbidden_ids = torch.tensor(forbidden, device=device)  # once: no host-to-device copy a step
        unfiltered = settings.top_k == 0 and settings.top_p >= 1.0
        self.fused = kernels.uses_triton(torch.empty(0, device=device)) and unfiltered
        self.compiled = not self.fused and kernels.csrc == "on" and unfiltered  # csrc/'s diffusionlm::draw

    def __call__(self, logits: torch.Tensor, positions: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens int64 [B, m], confidence float64 [B, m]) from the model's logits [B, m, V] (any float dtype)
        at `positions` ([m] shared by the rows, or [B, m]) of denoising step `step`, with the uniforms of the
        rows' token streams. The token is a draw from softmax of logits / temperature (greedy at temperature 0)
        after top-k and top-p, the forbidden ids never drawn; the confidence is the untempered, unfiltered
        softmax probability of that token."""
        s = self.settings
        if self.fused:
            return _draw_triton(logits, self.streams, positions, step, s.temperature, self.forbidden)
        keys = self.streams.bases(step, TOKENS, positions)
        if self.compiled:
            return csrc.draw(logits, keys[0], keys[1], s.temperature, *self.forbidden)
        full = forbid(logits, self.forbidden_ids)
        uniforms = self.streams.from_bases(keys, logits.shape[-1]) if s.temperature > 0 else None
        tokens = sample_tokens(full, s.temperature, s.top_k, s.top_p, uniforms)
        return tokens, full.softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)


def _draw_triton(logits: torch.Tensor, streams: RowStreams, positions: torch.Tensor, step: int,
                 temperature: float, forbidden: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    from diffusionlm.inference.triton_draw import draw_kernel

    shape, vocab = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, vocab).contiguous()
    n = flat.shape[0]
    tokens = torch.empty(n, dtype=torch.int64, device=logits.device)
    conf = torch.empty(n, dtype=torch.float64, device=logits.device)
    flat_positions = positions.expand(shape).reshape(-1).contiguous()
    mix0, mix1 = RowStreams.step_mix(step, TOKENS)
    draw_kernel[(n,)](flat, streams.keys, flat_positions, tokens, conf, shape[-1], vocab, mix0, mix1,
                      temperature or 1.0, forbidden[0], forbidden[1], GREEDY=temperature == 0, BLOCK_V=_BLOCK_V,
                      num_warps=4)
    return tokens.view(shape), conf.view(shape)
