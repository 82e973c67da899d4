"""The seam between the training loop and however many processes run it.

`SingleProcess` is the default; `ddp/` provides a subclass for torch.distributed. The trainer calls only
these methods, so it never imports torch.distributed and model code never sees it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from config.schema import OptimizerConfig
from diffusionlm.training.optim import ParamGroup, make_optimizer, param_groups


class SingleProcess:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap_model(self, model: nn.Module) -> nn.Module:
        return model

    def build_optimizer(self, model: nn.Module, opt_cfg: OptimizerConfig, compiled: bool = False,
                        ) -> tuple[torch.optim.Optimizer, list[ParamGroup]]:
        """`compiled`: the model runs under torch.compile (no module hooks may wait on communication)."""
        groups = param_groups(model, opt_cfg)
        return make_optimizer(groups, opt_cfg), groups

    def settle_parameters(self, optimizer: torch.optim.Optimizer) -> None:
        """Finish any parameter communication still in flight, before weights are read outside a forward."""

    def skips_on_device(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether setting `optimizer.found_inf` to a nonzero device tensor turns its step into a no-op on the
        device (weights, moments and step count untouched): torch's fused AdamW does, on CUDA and the CPU."""
        return isinstance(optimizer, torch.optim.AdamW) and bool(optimizer.defaults.get("fused"))

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module) -> Iterator[None]:
        """Skip gradient communication on micro-steps that are not the last of an accumulation."""
        yield

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        pass

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def save_optimizer(self, optimizer: torch.optim.Optimizer, directory: Path) -> None:
        torch.save(optimizer.state_dict(), directory / "optimizer.pt")

    def load_optimizer(self, optimizer: torch.optim.Optimizer, directory: Path) -> None:
        if not (directory / "optimizer.pt").is_file() and any(directory.glob("optimizer_rank*.pt")):
            raise ValueError(f"{directory} holds sharded optimizer state from a data-parallel run: resume it with "
                             "diffusionlm-train-ddp (any number of processes, e.g. --set ddp.nproc_per_node=1)")
        state = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state)

    def close(self) -> None:
        pass
