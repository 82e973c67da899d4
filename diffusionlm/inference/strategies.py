"""Which candidates a step commits, for each strategy: tensor ops on [B, n] scores, static shapes, no host
synchronisation. The candidates themselves come from `draw.py`."""

from __future__ import annotations

import torch

from diffusionlm.inference.streams import ORDER, RowStreams


def ancestral_reveal(masked: torch.Tensor, streams: RowStreams, step: int, positions: torch.Tensor,
                     steps_left: int) -> torch.Tensor:
    """MDLM's reverse step from t to s = t - 1/S under the log-linear schedule (alpha_t = 1 - t) on a grid of
    S steps: a masked position is revealed with probability (t - s) / t = 1 / steps_left (all at the last)."""
    return masked & (streams.uniform(step, ORDER, positions) < 1.0 / steps_left)


def top_k_commit(score: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest-scoring positions of every row of `score` [B, m] (all of them still masked)."""
    return torch.zeros_like(score, dtype=torch.bool).scatter_(-1, score.topk(k, dim=-1).indices, True)


def threshold_commit(eligible: torch.Tensor, conf: torch.Tensor, threshold: float,
                     at_least: torch.Tensor) -> torch.Tensor:
    """Fast-dLLM's parallel decoding: every eligible position whose candidate's probability exceeds `threshold`,
    and in any case the `at_least` [B] most confident of each row."""
    score = conf.masked_fill(~eligible, -1.0)
    rank = score.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
    return eligible & ((conf > threshold) | (rank < at_least[:, None]))
