"""One denoising step of each strategy, on the positions [n] of a block of every row: tensor ops, static shapes,
no host synchronisation. Each returns the ids to write at those positions and which of them it committed."""

from __future__ import annotations

import torch

from diffusionlm.inference.categorical import sample_tokens
from diffusionlm.inference.settings import SamplerSettings
from diffusionlm.inference.streams import ORDER, TOKENS, RowStreams


def draw_candidates(logits: torch.Tensor, settings: SamplerSettings, streams: RowStreams, step: int,
                    positions: torch.Tensor) -> torch.Tensor:
    """A token for every position: [B, n] from float64 logits [B, n, V] (forbidden ids at -inf)."""
    uniforms = None
    if settings.temperature > 0:
        uniforms = streams.uniform(step, TOKENS, positions, logits.shape[-1])
    return sample_tokens(logits, settings.temperature, settings.top_k, settings.top_p, uniforms)


def confidence(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The model's probability of each candidate, softmax of the untempered, unfiltered logits [B, n]."""
    return logits.softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)


def ancestral_reveal(masked: torch.Tensor, streams: RowStreams, step: int, positions: torch.Tensor,
                     steps_left: int) -> torch.Tensor:
    """MDLM's reverse step from t to s = t - 1/S under the log-linear schedule (alpha_t = 1 - t) on a grid of
    S steps: a masked position is revealed with probability (t - s) / t = 1 / steps_left (all at the last)."""
    return masked & (streams.uniform(step, ORDER, positions) < 1.0 / steps_left)


def top_k_commit(masked: torch.Tensor, score: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest-scoring masked positions of every row (every row has at least k masked)."""
    chosen = score.masked_fill(~masked, float("-inf")).topk(k, dim=-1).indices
    return torch.zeros_like(masked).scatter_(-1, chosen, True) & masked


def threshold_commit(eligible: torch.Tensor, conf: torch.Tensor, threshold: float,
                     at_least: torch.Tensor) -> torch.Tensor:
    """Fast-dLLM's parallel decoding: every eligible position whose candidate's probability exceeds `threshold`,
    and in any case the `at_least` [B] most confident of each row."""
    score = conf.masked_fill(~eligible, -1.0)
    rank = score.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
    return eligible & ((conf > threshold) | (rank < at_least[:, None]))
