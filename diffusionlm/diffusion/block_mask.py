"""Block diffusion's attention mask over a noisy row and its clean copy, x_t ⊕ x_0 (BD3-LM, Arriola et al. 2025).

Training feeds both halves, each of length L and split into blocks of `block_size`, through one forward pass.
Query i may attend key j iff
  - both are in the noisy half and in the same block (bidirectional within the block: the block denoises itself);
  - the query is in noisy block b and the key in clean block < b (its clean context);
  - both are in the clean half and the key's block is at most the query's (block-causal: the clean half is the
    context a sampler would have cached, so it must not see later clean blocks).
Clean queries never see noisy keys. So noisy block b depends on x_0 only through blocks < b.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=16)
def block_mask(length: int, block_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool [2L, 2L] for L = `length`, True where a query (row) may attend a key (column); see the module docstring.

    Cached per (length, block_size, device): every step of a run uses the same one, so it is built once. The
    returned tensor is shared between callers; do not modify it.
    """
    if block_size < 1 or length % block_size:
        raise ValueError(f"block_size ({block_size}) must be >= 1 and divide the row length ({length})")
    idx = torch.arange(2 * length, device=device)
    clean = idx >= length
    block = (idx % length) // block_size
    q_clean, k_clean = clean[:, None], clean[None, :]
    q_block, k_block = block[:, None], block[None, :]
    noisy_self = ~q_clean & ~k_clean & (q_block == k_block)
    noisy_context = ~q_clean & k_clean & (k_block < q_block)
    clean_causal = q_clean & k_clean & (k_block <= q_block)
    return noisy_self | noisy_context | clean_causal
