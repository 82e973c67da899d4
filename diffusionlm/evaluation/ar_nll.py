"""The exact NLL of held-out sequences under an AR (causal) model, per sequence in float64.

The scored tokens are the AR objective's own (`diffusionlm.diffusion.ar.next_token_ce`: every real token whose
left neighbour is real, so each row's first token is context), so `val.nelbo` of an AR run and this figure are
the same quantity. Note for comparisons with an MDLM bound: the MDLM NELBO scores all n tokens of a row, the AR
NLL the n - 1 after the first; per-token figures stay comparable, and rows of a few hundred tokens make the
difference in coverage small.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from diffusionlm.diffusion import next_token_ce


@torch.no_grad()
def nll_per_sequence(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token NLL in nats, scored tokens), float64 [B] each."""
    ce, _, targets = next_token_ce(model, input_ids, attention_mask)
    rows = targets.nonzero()[:, 0]
    total = torch.zeros(input_ids.shape[0], dtype=torch.float64, device=input_ids.device)
    total.index_add_(0, rows, ce.double())
    return total, targets.sum(-1, dtype=torch.float64)
