"""Iterative unmasking: start from all `<mask>` after the prompt, reveal a few tokens per step.

Each step predicts every masked position, samples a candidate token for each, and commits the k
candidates chosen by the strategy: `low_confidence` keeps the most confident ones (the others stay
masked, "low-confidence remasking", LLaDA), `random` keeps k at random (the ancestral MDLM order).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn as nn


def tokens_per_step(n_masked: int, steps: int) -> list[int]:
    """Spread n_masked reveals over `steps` steps as evenly as possible (earlier steps get the remainder)."""
    steps = max(1, min(steps, n_masked)) if n_masked else 1
    base, extra = divmod(n_masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


def _gumbel_sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-20, 1.0)
    return (logits / temperature - torch.log(-torch.log(u))).argmax(-1)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    total_length: int,
    mask_token_id: int,
    steps: int = 64,
    strategy: str = "low_confidence",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    step_context: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """prompt: int64 [B, P] (P may be 0). Returns [B, total_length] with no `<mask>` left.

    step_context: wraps each denoising step (the CLI passes an NVTX range factory for profiling).
    """
    if strategy not in ("low_confidence", "random"):
        raise ValueError(f"unknown sampling strategy {strategy!r}")
    B, P = prompt.shape
    if total_length < P:
        raise ValueError(f"prompt has {P} tokens, more than total_length={total_length}")
    device = prompt.device
    x = torch.full((B, total_length), mask_token_id, dtype=torch.long, device=device)
    x[:, :P] = prompt
    n_gen = total_length - P
    for i, k in enumerate(tokens_per_step(n_gen, steps)):
        if k == 0:
            break
        with step_context() if step_context is not None else contextlib.nullcontext():
            x = _denoise_step(model, x, k, mask_token_id, strategy, temperature, generator)
        if on_step is not None:
            on_step(i, x)
    return x


def _denoise_step(model: nn.Module, x: torch.Tensor, k: int, mask_token_id: int, strategy: str,
                  temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Commit k of the still-masked positions of every row."""
    device = x.device
    is_masked = x == mask_token_id
    t = is_masked.float().mean(-1)  # current mask fraction = diffusion time under log-linear
    logits = model(x, t=t).float()
    candidates = _gumbel_sample(logits, temperature, generator)
    if strategy == "low_confidence":
        score = torch.softmax(logits, -1).gather(-1, candidates[..., None]).squeeze(-1)
    else:
        score = torch.rand(x.shape, generator=generator, device=device)
    score = torch.where(is_masked, score, -torch.inf)
    chosen = score.topk(k, dim=-1).indices
    return x.scatter(1, chosen, candidates.gather(1, chosen))
