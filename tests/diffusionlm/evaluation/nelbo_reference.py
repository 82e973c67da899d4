"""The exact MDLM NELBO of short sequences, by enumerating every masking pattern and integrating over t in
float64 (Gauss-Legendre), and a toy masked model whose predictions depend smoothly on x_t and t."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn as nn

from diffusionlm.diffusion import NoiseSchedule


class ToyMaskedModel(nn.Module):
    """logits_i = bias[i] + sum_j table[j, i, x_t[j]] + t * slope[x_t[i]]: every position sees the whole noisy
    sequence, and the time enters linearly (so the integrand over t is smooth); `<mask>` logit -inf."""

    def __init__(self, vocab_size: int, length: int, mask_token_id: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.bias = nn.Parameter(torch.randn(length, vocab_size, generator=g))
        self.table = nn.Parameter(1.5 * torch.randn(length, length, vocab_size, vocab_size, generator=g))
        self.slope = nn.Parameter(2.0 * torch.randn(vocab_size, vocab_size, generator=g))
        self.mask_token_id = mask_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                t: torch.Tensor | None = None, output_mask: torch.Tensor | None = None,
                output_index: torch.Tensor | None = None) -> torch.Tensor:
        B, L = input_ids.shape
        logits = self.bias[None].expand(B, L, -1).clone()
        for j in range(L):
            logits = logits + self.table[j][:, input_ids[:, j]].permute(1, 0, 2)  # [B, L, V]
        if t is not None:
            logits = logits + t.to(logits.dtype)[:, None, None] * self.slope[input_ids]
        logits[..., self.mask_token_id] = float("-inf")
        return logits[output_mask] if output_mask is not None else logits


def all_sequences(real_tokens: list[int], length: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(real_tokens, repeat=length)), dtype=torch.long)


@torch.no_grad()
def exact_nelbo(model: nn.Module, seqs: torch.Tensor, schedule: NoiseSchedule, mask_token_id: int, eps: float,
                nodes: int = 128) -> np.ndarray:
    """float64 [S]: E_{t ~ U[eps, 1]} E_{m ~ q(.|t)} [w(t) sum_{i in m} -log p(x_i | x_t)] for each sequence."""
    S, L = seqs.shape
    patterns = torch.tensor(list(itertools.product([False, True], repeat=L)))  # [P, L]
    n_masked = patterns.sum(-1).double()
    xt = torch.where(patterns[None], mask_token_id, seqs[:, None]).reshape(-1, L)  # [S*P, L]
    targets = seqs[:, None].expand(S, len(patterns), L).reshape(-1, L)
    u, w = np.polynomial.legendre.leggauss(nodes)
    total = np.zeros(S)
    for u_j, w_j in zip(u, w):
        t = eps + (1 - eps) * (u_j + 1) / 2
        t64 = torch.tensor(t, dtype=torch.float64)
        p, weight = schedule.mask_prob(t64), schedule.weight(t64)
        logits = model(xt, t=torch.full((len(xt),), t, dtype=torch.float32)).double()
        ce = -logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)  # [S*P, L]
        ce_masked = (ce * patterns.repeat(S, 1)).sum(-1).reshape(S, -1)  # [S, P]
        prob = p ** n_masked * (1 - p) ** (L - n_masked)  # [P]
        f = weight * (ce_masked * prob[None]).sum(-1)
        total += (w_j * (1 - eps) / 2) * f.numpy()
    return total / (1 - eps)
