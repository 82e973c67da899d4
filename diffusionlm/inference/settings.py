"""The sampler's settings, checked once: one value object for the CLI, the benchmark and the trainer's samples."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

from config.schema import InferenceConfig

Strategy = Literal["ancestral", "low_confidence", "random", "threshold"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


@dataclass(frozen=True)
class SamplerSettings:
    """How to denoise. `strategy`:
    - ancestral: MDLM's reverse process under the log-linear schedule; from time t to s each masked position is
      revealed with probability (t - s) / t, with a token drawn from the model; the network is not called again
      while nothing changed (its logits are reused).
    - low_confidence: draw a candidate everywhere, commit the k most confident (LLaDA's remasking).
    - random: draw candidates, commit k random masked positions.
    - threshold: commit every candidate whose probability exceeds `threshold` (Fast-dLLM), and at least the
      pace that finishes each block within its steps (one a step when steps >= positions); `steps` is then an
      upper bound and confident models take fewer.
    `block_length` > 0 cuts the generated region into semi-autoregressive blocks denoised left to right, 0 is
    one block. `temperature` 0 is greedy; `top_k` 0 and `top_p` 1 filter nothing. `seed` keys every row's own
    random stream (row r of a batch samples as row r of any other batch with the same seed).
    """

    strategy: Strategy = "low_confidence"
    steps: int = 64
    block_length: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    threshold: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "strategy": (self.strategy in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
            "steps": (_is_int(self.steps) and self.steps >= 1, ">= 1"),
            "block_length": (_is_int(self.block_length) and self.block_length >= 0, ">= 0 (0: one block)"),
            "temperature": (_is_num(self.temperature) and self.temperature >= 0, ">= 0 (0: greedy)"),
            "top_k": (_is_int(self.top_k) and self.top_k >= 0, ">= 0 (0: off)"),
            "top_p": (_is_num(self.top_p) and 0 < self.top_p <= 1, "in (0, 1] (1: off)"),
            "threshold": (_is_num(self.threshold) and 0 < self.threshold < 1, "in (0, 1)"),
            "seed": (_is_int(self.seed), "an integer"),
        }
        for name, (ok, want) in checks.items():
            if not ok:
                raise ValueError(f"sampler setting {name} must be {want}, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, inf: InferenceConfig, **overrides: Any) -> SamplerSettings:
        """The settings of an `[inference]` section (the fields of the same names), with `overrides`."""
        values = {f.name: getattr(inf, f.name) for f in fields(cls)}
        return cls(**{**values, **overrides})

    def replace(self, **changes: Any) -> SamplerSettings:
        return replace(self, **changes)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
