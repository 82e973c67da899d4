"""Training objectives (masked diffusion: MDLM; block diffusion: BD3-LM; the autoregressive baseline: AR) and
their noise schedules, built by name from the registry.

The objective contract (`Objective` below): `real_tokens(batch)` says which positions count;
`objective(model, batch, generator, normalizer) -> (loss, metrics)` is the reference computation;
`training_loss(model, device, compile, kernels)` returns the callable a training step uses, with the same
signature minus the model, which may be a faster path computing the same loss from the same draws. The
loss is already divided by `normalizer` (the step's real-token count over accumulation and ranks), so
neither gradient accumulation nor DDP rescales anything. `metrics` holds at least `masked_ce`,
`masked_acc` and `num_masked` over the positions the loss scores, and `num_dropped` where a path can
leave scored positions out (the trainer then skips the update).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn as nn

from config import registry
from diffusionlm.diffusion.ar import ARObjective, build_ar, next_token_ce, next_token_targets
from diffusionlm.diffusion.bd3lm import BD3LMObjective, build_bd3lm
from diffusionlm.diffusion.block_mask import block_mask
from diffusionlm.diffusion.masked_loss import CompiledMaskedLoss, static_capacity
from diffusionlm.diffusion.mdlm import MDLMObjective, build_mdlm
from diffusionlm.diffusion.noise import forward_mask, sample_times
from diffusionlm.diffusion.schedules import SCHEDULES, NoiseSchedule, get_schedule

if TYPE_CHECKING:
    from config.schema import Config
    from diffusionlm.ops import KernelPolicy

Batch = dict[str, torch.Tensor]
LossResult = tuple[torch.Tensor, dict[str, torch.Tensor]]


class Objective(Protocol):
    def real_tokens(self, batch: Batch) -> torch.Tensor: ...

    def __call__(self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None,
                 normalizer: torch.Tensor | float | None = None) -> LossResult: ...

    def training_loss(self, model: nn.Module, device: torch.device, compile: bool = False,
                      kernels: KernelPolicy | None = None) -> Callable[..., LossResult]: ...


def build_objective(cfg: Config) -> Objective:
    """The objective `cfg.objective.name` with its settings, for the model of `cfg.model`."""
    return registry.objective(cfg.objective.name).build(cfg.objective, cfg.model)


__all__ = ["SCHEDULES", "ARObjective", "BD3LMObjective", "CompiledMaskedLoss", "MDLMObjective", "NoiseSchedule",
           "Objective", "block_mask", "build_ar", "build_bd3lm", "build_mdlm", "build_objective", "forward_mask",
           "get_schedule", "next_token_ce", "next_token_targets", "sample_times", "static_capacity"]
