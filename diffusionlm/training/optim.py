"""Optimizer construction: parameter groups, AdamW or Muon, and the learning-rate schedule.

Groups are described once (`ParamGroup`) so the single-device trainer and the sharded DDP optimizer
build the same optimizer from any subset of parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from config.schema import OptimizerConfig


@dataclass
class ParamGroup:
    name: str  # "decay"/"no_decay" for AdamW; "hidden"/"head"/"embed"/"scalar" for Muon
    params: list[nn.Parameter] = field(default_factory=list)
    param_names: list[str] = field(default_factory=list)


def _unique_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    # Tied weights appear once (named_parameters dedups), under their first name ("embed.weight").
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def param_groups(model: nn.Module, opt_cfg: OptimizerConfig) -> list[ParamGroup]:
    """Split parameters by role. Muon takes only 2-D hidden matrices; everything else goes to AdamW."""
    if opt_cfg.optimizer_name == "adamw":
        names = ["decay", "no_decay"]
    else:
        names = ["hidden", "head", "embed", "scalar"]
    groups = {n: ParamGroup(n) for n in names}
    for name, p in _unique_named_parameters(model):
        if opt_cfg.optimizer_name == "adamw":
            key = "decay" if p.ndim >= 2 else "no_decay"
        elif name.startswith("embed."):
            key = "embed"
        elif name.startswith("head."):
            key = "head"
        elif p.ndim >= 2:
            key = "hidden"
        else:
            key = "scalar"
        groups[key].params.append(p)
        groups[key].param_names.append(name)
    return [g for g in groups.values() if g.params]


def _use_fused(opt_cfg: OptimizerConfig, params: list[nn.Parameter]) -> bool:
    if opt_cfg.fused == "off":
        return False
    # torch has fused AdamW kernels for CUDA and the CPU; "auto" takes them on CUDA, where they pay most.
    return opt_cfg.fused == "on" or all(p.is_cuda for p in params)


def make_optimizer(groups: list[ParamGroup], opt_cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Build the optimizer over `groups` (all of a model's groups, or one rank's shard of them).

    The optimizer's param_groups keep the order of `groups`, so `group_names(groups)[i]` labels
    `optimizer.param_groups[i]` (the Muon classes reject extra keys in a group, so names live outside).
    """
    if opt_cfg.optimizer_name == "adamw":
        torch_groups = [
            {"params": g.params, "weight_decay": opt_cfg.weight_decay if g.name == "decay" else 0.0}
            for g in groups
        ]
        all_params = [p for g in groups for p in g.params]
        if not all_params:  # a rank that owns nothing still needs a valid optimizer object
            return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(0))], lr=opt_cfg.lr)
        return torch.optim.AdamW(torch_groups, lr=opt_cfg.lr, betas=opt_cfg.betas, eps=opt_cfg.eps,
                                 fused=_use_fused(opt_cfg, all_params) or None)
    from muon import SingleDeviceMuonWithAuxAdam

    torch_groups = []
    for g in groups:
        sub = getattr(opt_cfg.muon, g.name)
        if g.name == "hidden":
            torch_groups.append(dict(params=g.params, lr=sub.lr, momentum=sub.momentum,
                                     weight_decay=sub.weight_decay, use_muon=True))
        else:
            torch_groups.append(dict(params=g.params, lr=sub.lr, betas=tuple(sub.betas), eps=opt_cfg.eps,
                                     weight_decay=sub.weight_decay, use_muon=False))
    if not torch_groups:
        torch_groups = [dict(params=[torch.nn.Parameter(torch.zeros(0))], use_muon=False)]
    return SingleDeviceMuonWithAuxAdam(torch_groups)


def group_names(groups: list[ParamGroup]) -> list[str]:
    return [g.name for g in groups]


def lr_multiplier(step: int, opt_cfg: OptimizerConfig, total_steps: int, warmup: int) -> float:
    """Linear warmup over `warmup` optimizer steps, then cosine decay to min_lr_ratio (or flat)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if opt_cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return opt_cfg.min_lr_ratio + (1 - opt_cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, opt_cfg: OptimizerConfig, total_steps: int,
                   warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule over `total_steps` optimizer steps, the first `warmup_steps` of them warming up."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, opt_cfg, total_steps, warmup_steps))
