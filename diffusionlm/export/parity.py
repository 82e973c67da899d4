"""How close an exported artifact's logits are to the eager fp32 model's, and whether that is close enough.

The family sets the `<mask>` logit to -inf, so a plain max-abs difference would be inf - inf = NaN there; those
entries are checked apart: the candidate must keep them at -inf or at least very negative (a runtime may clamp -inf
to the dtype's lowest value, which samples the same). Every other entry must be finite and close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# A logit at most this is never sampled next to ordinary logits (exp(-1e4) underflows in every float type), so a
# runtime that writes it in place of -inf serves the same distribution.
MASKED_LOGIT_CEILING = -1e4


class ParityError(RuntimeError):
    """An exported artifact does not reproduce the eager model closely enough; the message has the figures."""


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x).detach().float().cpu()


def json_float(x: float) -> float | str:
    """JSON has no inf or NaN: those are written as the strings "inf", "-inf", "nan"."""
    return x if math.isfinite(x) else str(x)


@dataclass(frozen=True)
class Comparison:
    """Candidate logits against the reference. `max_abs_diff` is over the entries the reference has finite (inf
    if the candidate is not finite there); `masked_ok` says the reference's -inf entries stayed -inf or at most
    MASKED_LOGIT_CEILING; `masked_logit` is the largest candidate value among them."""

    max_abs_diff: float
    argmax_agreement: float
    finite_ok: bool
    masked_ok: bool
    masked_logit: float

    def record(self) -> dict[str, Any]:
        return {"max_abs_diff": json_float(self.max_abs_diff), "argmax_agreement": self.argmax_agreement,
                "finite_ok": self.finite_ok, "masked_ok": self.masked_ok, "masked_logit": json_float(self.masked_logit)}


def compare(reference: torch.Tensor | np.ndarray, candidate: torch.Tensor | np.ndarray) -> Comparison:
    ref, cand = _as_tensor(reference), _as_tensor(candidate)
    if ref.shape != cand.shape:
        raise ParityError(f"logits of shape {tuple(cand.shape)}, expected {tuple(ref.shape)}")
    finite = torch.isfinite(ref)
    finite_ok = bool(torch.isfinite(cand[finite]).all())
    diff = (cand[finite] - ref[finite]).abs()
    max_abs_diff = float(diff.max()) if finite_ok and diff.numel() else (0.0 if finite_ok else math.inf)
    masked = cand[~finite]
    masked_ok = bool((masked <= MASKED_LOGIT_CEILING).all())  # NaN compares False: not ok
    masked_logit = float(masked.max()) if masked.numel() else -math.inf
    if masked.numel() and bool(masked.isnan().any()):
        masked_logit = math.nan
    agreement = float((cand.argmax(-1) == ref.argmax(-1)).double().mean())
    return Comparison(max_abs_diff, agreement, finite_ok, masked_ok, masked_logit)


def within_tolerance(c: Comparison, tolerance: float) -> bool:
    """The exact-precision gate: an fp32 artifact must match entry for entry."""
    return c.finite_ok and c.masked_ok and c.max_abs_diff <= tolerance


def agrees(c: Comparison, min_agreement: float) -> bool:
    """The reduced-precision gate: fp16 rounding moves every logit a little, so what must hold is the decision
    sampling makes from them (the argmax, at nearly every position) and finiteness (no fp16 overflow)."""
    return c.finite_ok and c.masked_ok and c.argmax_agreement >= min_agreement
