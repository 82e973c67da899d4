"""The MDLM training objective: sample times, mask tokens, score the masked ones with the ELBO weight.

The loss of a batch is  sum_{masked i} w(t_b) * CE_i / normalizer, where the normalizer is the number of
real (non-pad) tokens. The trainer passes the normalizer computed over all micro-batches and ranks of an
optimizer step, so gradient accumulation and DDP need no rescaling; left unset it is the batch's own count.

Two paths compute this loss from the same draws: `__call__` (the reference: boolean-mask selection and
F.cross_entropy; validation and CPUs) and `CompiledMaskedLoss` (masked_loss.py: one compiled graph with
static shapes; CUDA). `training_loss` picks one from `[objective] loss_path`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from config.model import ModelConfig
from config.objective import MDLMConfig
from diffusionlm.diffusion.masked_loss import CompiledMaskedLoss
from diffusionlm.diffusion.noise import forward_mask, sample_times
from diffusionlm.diffusion.schedules import NoiseSchedule, get_schedule
from diffusionlm.ops import PYTORCH, KernelPolicy

LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class MDLMObjective:
    schedule: NoiseSchedule
    mask_token_id: int
    pad_token_id: int
    eps: float = 1e-3
    antithetic: bool = True
    masked_only_logits: bool = True
    loss_path: str = "auto"

    @classmethod
    def from_config(cls, cfg: MDLMConfig, model_cfg: ModelConfig) -> MDLMObjective:
        return cls(get_schedule(cfg.schedule), model_cfg.mask_token_id, model_cfg.pad_token_id, cfg.eps,
                   cfg.antithetic, cfg.masked_only_logits, cfg.loss_path)

    def uses_masked_rows(self, device: torch.device) -> bool:
        """Whether training takes the compiled masked-rows path (`loss_path`, resolved for `device`)."""
        if self.loss_path == "auto":
            return device.type == "cuda" and self.masked_only_logits
        return self.loss_path == "masked_rows"

    def training_loss(self, model: nn.Module, device: torch.device, compile: bool = False,
                      kernels: KernelPolicy = PYTORCH) -> LossFn:
        """The loss a training step calls as `loss(batch, generator, normalizer) -> (loss, metrics)`, for `model`
        (already wrapped for data parallelism where there is any): the masked-rows path or the reference."""
        if self.uses_masked_rows(device):
            return CompiledMaskedLoss(self, model, compile, kernels)
        return functools.partial(self, torch.compile(model) if compile else model)

    def real_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch.get("attention_mask")
        return mask if mask is not None else torch.ones_like(batch["input_ids"], dtype=torch.bool)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                 normalizer: torch.Tensor | float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0 = batch["input_ids"]
        real = self.real_tokens(batch)
        t = sample_times(x0.shape[0], self.eps, self.antithetic, generator, x0.device)
        masked = forward_mask(x0, self.schedule.mask_prob(t), real, generator)
        return self.loss_at(model, x0, batch.get("attention_mask"), t, masked, normalizer)

    def loss_at(self, model: nn.Module, x0: torch.Tensor, attention_mask: torch.Tensor | None, t: torch.Tensor,
                masked: torch.Tensor, normalizer: torch.Tensor | float | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss for given times and masks: the deterministic part of `__call__`."""
        xt = torch.where(masked, self.mask_token_id, x0)
        if self.masked_only_logits:
            logits = model(xt, attention_mask=attention_mask, t=t, output_mask=masked)  # [N, V]
            targets = x0[masked]
            weights = self.schedule.weight(t)[:, None].expand_as(masked)[masked]
        else:
            logits = model(xt, attention_mask=attention_mask, t=t)
            logits, targets = logits.flatten(0, 1), x0.flatten()
            weights = (self.schedule.weight(t)[:, None] * masked).flatten()
        counted = None if self.masked_only_logits else masked.flatten()
        return weighted_ce_loss(logits, targets, weights, masked, attention_mask, normalizer, counted)


def weighted_ce_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, masked: torch.Tensor,
                     attention_mask: torch.Tensor | None, normalizer: torch.Tensor | float | None,
                     counted: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The masked-diffusion ELBO loss from scored rows, shared by the objectives that weight each masked token's
    cross-entropy: sum(weights * CE) / normalizer (the real-token count when None), and the statistics over the
    masked tokens. `counted` marks which scored rows are masked tokens when all positions were scored (None: the
    rows are exactly the masked tokens)."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")  # fp32 log-softmax
    if normalizer is None:
        real = attention_mask if attention_mask is not None else torch.ones_like(masked)
        normalizer = real.sum().clamp_min(1)
    loss = (weights * ce).sum() / normalizer
    with torch.no_grad():
        n_masked = masked.sum()
        hits = logits.argmax(-1) == targets
        if counted is not None:
            ce, hits = ce * counted, hits & counted
        metrics = {
            "masked_ce": ce.sum() / n_masked.clamp_min(1),
            "masked_acc": hits.sum() / n_masked.clamp_min(1),
            "mask_fraction": n_masked / normalizer,
            "num_masked": n_masked,
        }
    return loss, metrics


def build_mdlm(cfg: MDLMConfig, model_cfg: ModelConfig) -> MDLMObjective:
    """The registry's builder for the objective "mdlm"."""
    if cfg.loss_path == "masked_rows" and not cfg.masked_only_logits:
        raise ValueError("objective.loss_path = 'masked_rows' needs objective.masked_only_logits = true")
    return MDLMObjective.from_config(cfg, model_cfg)
