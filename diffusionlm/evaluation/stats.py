"""Per-sequence accumulation in float64 and the confidence interval of a per-token rate.

Why float64: a held-out set has millions of tokens; a running fp32 sum of per-token losses loses the low digits
of every addend once the total is large (at 1e7 nats, fp32 resolves 1 nat), so the per-token figures would
depend on batch order. Every estimator here returns one float64 total per sequence, and all further sums are
float64 (tensors) or Python floats.

Why per sequence: tokens within a sequence are correlated and the NELBO's Monte-Carlo draws are made per
sequence, so the sequence is the independent unit. The per-token rate R = sum_s y_s / sum_s n_s is a ratio
estimator; its standard error is the delta-method one, sqrt(sum_s (y_s - R n_s)^2 / (S (S - 1))) / mean(n),
which for equal-length rows is the standard error of the per-sequence per-token means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class RateEstimate:
    """A per-token rate in nats with its standard error (NaN with fewer than two sequences)."""

    nats_per_token: float
    se: float
    sequences: int
    tokens: float

    @property
    def ci95(self) -> tuple[float, float] | None:
        if not math.isfinite(self.se):
            return None
        return self.nats_per_token - Z95 * self.se, self.nats_per_token + Z95 * self.se

    def as_dict(self, perplexity_key: str = "perplexity") -> dict[str, object]:
        """nats, bits and perplexity, each with its 95% interval (perplexity's is exp of the nats interval)."""
        ci = self.ci95
        ln2 = math.log(2.0)
        return {
            "nats_per_token": self.nats_per_token,
            "bits_per_token": self.nats_per_token / ln2,
            perplexity_key: _exp(self.nats_per_token),
            "se_nats": self.se if math.isfinite(self.se) else None,
            "ci95_nats": list(ci) if ci else None,
            "ci95_bits": [ci[0] / ln2, ci[1] / ln2] if ci else None,
            f"ci95_{perplexity_key}": [_exp(ci[0]), _exp(ci[1])] if ci else None,
            "sequences": self.sequences,
            "tokens": int(self.tokens),
        }


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


class PerSequence:
    """Collects each sequence's total (float64, e.g. summed NLL) and token count; sequences with no tokens are
    left out (nothing was scored in them)."""

    def __init__(self) -> None:
        self._totals: list[torch.Tensor] = []
        self._tokens: list[torch.Tensor] = []

    def add(self, totals: torch.Tensor, tokens: torch.Tensor) -> None:
        if totals.dtype != torch.float64:
            raise TypeError(f"per-sequence totals must be float64, got {totals.dtype}")
        keep = tokens > 0
        self._totals.append(totals[keep].detach().cpu())
        self._tokens.append(tokens[keep].detach().to("cpu", torch.float64))

    @property
    def sequences(self) -> int:
        return sum(len(t) for t in self._tokens)

    @property
    def tokens(self) -> float:
        return float(sum(t.sum().item() for t in self._tokens))

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(totals, tokens), float64 [S] each."""
        empty = torch.zeros(0, dtype=torch.float64)
        return (torch.cat(self._totals) if self._totals else empty, torch.cat(self._tokens) if self._tokens else empty)

    def estimate(self) -> RateEstimate:
        y, n = self.values()
        return rate_estimate(y, n)


def rate_estimate(y: torch.Tensor, n: torch.Tensor) -> RateEstimate:
    """The ratio estimate sum(y) / sum(n) and its delta-method standard error (module docstring); float64."""
    y, n = y.double(), n.double()
    S, tokens = len(y), float(n.sum())
    if S == 0 or tokens == 0:
        return RateEstimate(math.nan, math.nan, S, tokens)
    rate = float(y.sum()) / tokens
    if S < 2:
        return RateEstimate(rate, math.nan, S, tokens)
    resid = y - rate * n
    se = math.sqrt(float((resid * resid).sum()) / (S * (S - 1))) / (tokens / S)
    return RateEstimate(rate, se, S, tokens)


class TokenCounts:
    """float64 sums over tokens: summed CE, correct predictions, tokens (masked-token accuracy and CE)."""

    def __init__(self) -> None:
        self.ce = self.correct = self.tokens = 0.0

    def add(self, ce: torch.Tensor, correct: torch.Tensor) -> None:
        """ce: per-token CE [N]; correct: bool [N]."""
        self.ce += float(ce.double().sum())
        self.correct += float(correct.double().sum())
        self.tokens += float(ce.numel())

    def as_dict(self) -> dict[str, float | None]:
        n = self.tokens
        return {"accuracy": self.correct / n if n else None, "ce_nats": self.ce / n if n else None,
                "tokens": int(n)}
