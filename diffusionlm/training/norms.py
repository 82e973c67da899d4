"""Optional diagnostics: per-block activation norms and per-parameter weight norms."""

from __future__ import annotations

import torch
import torch.nn as nn


class ActivationNorms:
    """Records the RMS of each block's output on the forward passes it is armed for."""

    def __init__(self, blocks: nn.ModuleList):
        self.values: dict[str, torch.Tensor] = {}
        self.armed = False
        self._handles = [b.register_forward_hook(self._hook(f"act_rms/block{i}")) for i, b in enumerate(blocks)]

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if self.armed:
                self.values[name] = output.detach().float().pow(2).mean().sqrt()
        return hook

    def collect(self) -> dict[str, float]:
        out = {f"metrics.{k}": v.item() for k, v in self.values.items()}
        self.values.clear()
        return out


def weight_norms(model: nn.Module) -> dict[str, float]:
    return {f"metrics.weight_norm/{n}": p.detach().float().norm().item() for n, p in model.named_parameters()}
