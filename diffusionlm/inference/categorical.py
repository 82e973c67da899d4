"""Drawing tokens from the model's logits: forbidden ids, temperature, top-k, top-p, float64 Gumbel-max.

Everything runs in float64 whatever the model's dtype. The Gumbel noise -log(-log(u)) is computed from float64
uniforms: from a float32 u the noise is capped near 16.6 (u <= 1 - 2^-24), which truncates the tail that gives
unlikely tokens their chance, so sampling comes out measurably colder than the asked-for temperature.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def forbid(logits: torch.Tensor, token_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """float64 copy of `logits` [..., V] with the given ids at -inf (`<mask>` and `<pad>` are never sampled).
    Pass the ids as a tensor on the logits' device to save a host-to-device copy."""
    if not isinstance(token_ids, torch.Tensor):
        token_ids = torch.tensor(list(token_ids), dtype=torch.long, device=logits.device)
    return logits.to(torch.float64).index_fill(-1, token_ids, float("-inf"))


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the k largest logits of the last dimension (k = 0 or k >= V: keep all), others -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, logits.topk(k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability sums to at least p
    (the most likely token always stays); p = 1 keeps all."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # probability mass of the more likely tokens
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sampling_logits(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The logits of the distribution actually sampled: divided by the temperature, then top-k, then top-p.
    With temperature 0 the logits are returned unscaled (sampling is an argmax)."""
    if temperature > 0:
        logits = logits / temperature
    return top_p_filter(top_k_filter(logits, top_k), top_p)


def gumbel_argmax(logits: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
    """argmax(logits + Gumbel noise) over the last dimension: a draw from softmax(logits). `uniforms` are
    float64 in (0, 1), one per logit; None means greedy (plain argmax)."""
    if uniforms is None:
        return logits.argmax(-1)
    noise = uniforms.to(torch.float64).log().neg_().log_().neg_()
    return noise.add_(logits).argmax(-1)


def sample_tokens(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                  uniforms: torch.Tensor | None) -> torch.Tensor:
    """Token ids [...] drawn from logits [..., V] (float64, forbidden ids already -inf). Temperature 0 is greedy
    and ignores `uniforms`."""
    if temperature == 0:
        return logits.argmax(-1)
    return gumbel_argmax(sampling_logits(logits, temperature, top_k, top_p), uniforms)
