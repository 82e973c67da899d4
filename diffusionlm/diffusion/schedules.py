"""Noise schedules for absorbing-state (masked) diffusion.

A schedule gives, for diffusion time t in (0, 1], the probability that a token is masked,
p(t) = 1 - alpha(t), and the continuous-time ELBO weight w(t) = -alpha'(t) / (1 - alpha(t)) that
multiplies the cross-entropy of each masked token (MDLM, Sahoo et al. 2024).
"""

from __future__ import annotations

import math

import torch


class NoiseSchedule:
    name: str

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LogLinearSchedule(NoiseSchedule):
    """alpha(t) = 1 - t: the mask fraction grows linearly, total noise sigma = -log(1 - t); w = 1/t."""

    name = "loglinear"

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 / t


class LinearSchedule(NoiseSchedule):
    """Total noise linear in t: sigma(t) = sigma_max * t, alpha = exp(-sigma)."""

    name = "linear"

    def __init__(self, sigma_max: float = 10.0):
        self.sigma_max = sigma_max

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(-self.sigma_max * t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        # sigma' * alpha / (1 - alpha) = sigma_max / (exp(sigma) - 1)
        return self.sigma_max / torch.expm1(self.sigma_max * t)


class CosineSchedule(NoiseSchedule):
    """alpha(t) = cos(pi t / 2): fewer masks early, a gentler start than log-linear."""

    name = "cosine"

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.cos(0.5 * math.pi * t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        half_pi = 0.5 * math.pi
        return half_pi * torch.sin(half_pi * t) / (1.0 - torch.cos(half_pi * t))


SCHEDULES: dict[str, type[NoiseSchedule]] = {
    "loglinear": LogLinearSchedule,
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
}


def get_schedule(name: str) -> NoiseSchedule:
    try:
        return SCHEDULES[name]()
    except KeyError:
        raise ValueError(f"unknown noise schedule {name!r}; choose from {sorted(SCHEDULES)}") from None
