"""`DDPContext`: the trainer's parallel context for torch.distributed (one process per device).

Reads the rank layout from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) and joins the process group; everything the trainer does across processes goes through here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from config.schema import DDPConfig, OptimizerConfig
from ddp.optimizer_files import read_state, write_shard
from ddp.sharding import OptimizerStateSharding, check_compatible, load_named_state, named_state
from diffusionlm.training.optim import ParamGroup, make_optimizer, param_groups
from diffusionlm.training.parallel import SingleProcess


class DDPSetupError(RuntimeError):
    """The process layout or device settings cannot work; the message is for the user."""


def rank_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from a torchrun-style environment, or None outside one."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def resolve_device(model_device: str, local_rank: int) -> torch.device:
    """One device per process: cuda:LOCAL_RANK when CUDA is wanted and present, else the CPU."""
    if model_device == "cpu" or (model_device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if model_device == "mps":
        raise DDPSetupError("model.device = 'mps' cannot run data-parallel; use cuda or cpu")
    if not torch.cuda.is_available():
        raise DDPSetupError(f"model.device = {model_device!r} but CUDA is not available")
    if local_rank >= torch.cuda.device_count():
        raise DDPSetupError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible; "
                            "lower --nproc-per-node / ddp.nproc_per_node")
    return torch.device("cuda", local_rank)  # a cuda:N setting is per-process meaningless under DDP


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise DDPSetupError("ddp.backend = 'nccl' needs CUDA devices; use 'gloo' (or 'auto') on CPU")
    return backend


def apply_nccl_settings(ddp_cfg: DDPConfig, backend: str, environ: MutableMapping[str, str] = os.environ,
                        ) -> dict[str, str]:
    """Export the config's NCCL choices before the process group exists (NCCL reads them at communicator
    creation). An explicit config value replaces an inherited NCCL_PROTO; 'auto' leaves the environment alone.
    Returns what was set."""
    if backend != "nccl" or ddp_cfg.nccl_protocol == "auto":
        return {}
    environ["NCCL_PROTO"] = ddp_cfg.nccl_protocol
    return {"NCCL_PROTO": ddp_cfg.nccl_protocol}


class DDPContext(SingleProcess):
    def __init__(self, ddp_cfg: DDPConfig, model_device: str = "auto"):
        layout = rank_env()
        if layout is None:
            raise DDPSetupError("not in a distributed launch (RANK/WORLD_SIZE unset): start with torchrun "
                                "or diffusionlm-train-ddp")
        self.rank, self.world_size, self.local_rank = layout
        self.cfg = ddp_cfg
        self.device = resolve_device(model_device, self.local_rank)
        self.backend = resolve_backend(ddp_cfg.backend, self.device)
        if ddp_cfg.gradient_compression == "bf16" and self.backend != "nccl":
            # torch's bf16 hook needs NCCL; refuse before any process group exists rather than mid-build
            raise DDPSetupError("ddp.gradient_compression = 'bf16' needs the nccl backend (CUDA GPUs); "
                                f"this run uses {self.backend}: use 'fp16' or 'none'")
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            apply_nccl_settings(ddp_cfg, self.backend)
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(self.backend, timeout=timedelta(seconds=ddp_cfg.timeout_s),
                                    device_id=self.device if self.device.type == "cuda" else None)
        self._groups: list[ParamGroup] = []
        self._name_of: dict[int, str] = {}

    # ---------------------------------------------------------------- model and optimizer
    def wrap_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            bucket_cap_mb=self.cfg.bucket_cap_mb,
            gradient_as_bucket_view=self.cfg.gradient_as_bucket_view,
            find_unused_parameters=self.cfg.find_unused_parameters,
        )
        hook = {"bf16": default_hooks.bf16_compress_hook, "fp16": default_hooks.fp16_compress_hook}.get(
            self.cfg.gradient_compression)
        if hook is not None:
            wrapped.register_comm_hook(None, hook)  # None: the default (whole-world) process group
        return wrapped

    def build_optimizer(self, model: nn.Module, opt_cfg: OptimizerConfig, compiled: bool = False,
                        ) -> tuple[torch.optim.Optimizer, list[ParamGroup]]:
        groups = param_groups(model, opt_cfg)
        self._groups = groups
        self._name_of = {id(p): n for g in groups for p, n in zip(g.params, g.param_names)}
        if self.cfg.shard_optimizer_state:
            sharded = OptimizerStateSharding(groups, opt_cfg, self.rank, self.world_size,
                                             bucket_cap_mb=self.cfg.bucket_cap_mb)
            if not compiled:
                sharded.defer_parameter_sync(model)
            return sharded, groups
        return make_optimizer(groups, opt_cfg), groups

    def skips_on_device(self, optimizer: torch.optim.Optimizer) -> bool:
        if isinstance(optimizer, OptimizerStateSharding):
            return optimizer.skips_on_found_inf
        return super().skips_on_device(optimizer)

    def settle_parameters(self, optimizer: torch.optim.Optimizer) -> None:
        if isinstance(optimizer, OptimizerStateSharding):
            optimizer.finish_parameter_sync()

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module) -> Iterator[None]:
        with model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext():
            yield

    # ---------------------------------------------------------------- collectives
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    # ---------------------------------------------------------------- checkpoints
    def save_optimizer(self, optimizer: torch.optim.Optimizer, directory: Path) -> None:
        """Each rank writes the shard it owns; unsharded, rank 0 writes everything (all ranks hold the same)."""
        if isinstance(optimizer, OptimizerStateSharding):
            write_shard(directory, self.rank, self.world_size, optimizer.state_dict(), optimizer.owned_names)
        elif self.is_main:
            names = [n for g in self._groups for n in g.param_names]
            state = named_state(optimizer, self._name_of, [g.name for g in self._groups])
            write_shard(directory, self.rank, self.world_size, state, names)

    def load_optimizer(self, optimizer: torch.optim.Optimizer, directory: Path) -> None:
        self.settle_parameters(optimizer)  # nothing in flight may overwrite what is loaded
        if isinstance(optimizer, OptimizerStateSharding):
            state = read_state(directory, self.rank, optimizer.owned_names, self._groups)
            optimizer.load_state_dict(state)
            return
        names = [n for g in self._groups for n in g.param_names]
        state = read_state(directory, self.rank, names, self._groups)
        check_compatible(state, [g.name for g in self._groups])
        load_named_state(optimizer, self._name_of, state["state"], state["param_groups"])

    def close(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
