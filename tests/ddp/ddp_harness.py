"""Shared by the ddp tests: real gloo process groups in spawned processes, and a step driver.

The driver does what Trainer.step does (global-token normaliser, no_sync on all but the last
micro-step, clipping, the context's optimizer step, the LR schedule), but with masks and times fixed in
advance for the GLOBAL batch, so a run of N ranks over slices of it must equal one process over all of it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from config import load_config
from config.schema import Config
from diffusionlm.diffusion import MDLMObjective
from diffusionlm.diffusion.mdlm import forward_mask, sample_times
from diffusionlm.models import DiffusionTransformer
from diffusionlm.training.optim import make_scheduler
from diffusionlm.training.rng import seed_everything

TINY = [
    "model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=512", "model.size=tiny",
    "tokenizer.vocab_size=512", "model.context_length=32", "inference.total_length=32", "model.device=cpu",
    "training.precision=fp32",
    "optimizer.warmup_iteration=1", "optimizer.lr=3e-3", "optimizer.grad_clip=1.0",
]


def tiny_config(optimizer: str = "adamw", shard: bool = True, accum: int = 2) -> Config:
    return load_config(None, [*TINY, f"optimizer.optimizer_name={optimizer}",
                              f"ddp.shard_optimizer_state={str(shard).lower()}",
                              f"training.grad_accum_steps={accum}", "training.max_train_iteration=8"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Any, world_size: int, port: int, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # One process group for the whole worker: the DDPContexts it builds join it instead of re-initialising
    # (a destroy + init on the same port races between ranks).
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Any, world_size: int, *args: Any) -> None:
    """Run fn(rank, world_size, *args) on `world_size` fresh processes; raises if any of them fails."""
    mp.start_processes(_entry, args=(fn, world_size, free_port(), args), nprocs=world_size, join=True,
                       start_method="spawn")


def make_batches(cfg: Config, steps: int, global_batch: int, seed: int = 1234) -> list[list[dict[str, torch.Tensor]]]:
    """`steps` optimizer steps of `grad_accum_steps` micro-batches each, with padding so the token
    normaliser matters, and the diffusion times and masks already drawn."""
    g = torch.Generator().manual_seed(seed)
    T, V = cfg.model.context_length, cfg.model.vocab_size
    objective = MDLMObjective.from_config(cfg.objective, cfg.model)
    out = []
    for _ in range(steps):
        micro = []
        for _ in range(cfg.training.grad_accum_steps):
            ids = torch.randint(5, V, (global_batch, T), generator=g)
            lengths = torch.randint(T // 3, T + 1, (global_batch,), generator=g)
            real = torch.arange(T)[None, :] < lengths[:, None]
            ids = torch.where(real, ids, cfg.model.pad_token_id)
            t = sample_times(global_batch, cfg.objective.eps, True, g, torch.device("cpu"))
            masked = forward_mask(ids, objective.schedule.mask_prob(t), real, g)
            micro.append({"input_ids": ids, "attention_mask": real, "t": t, "masked": masked})
        out.append(micro)
    return out


def rank_slice(batch: dict[str, torch.Tensor], rank: int, world_size: int) -> dict[str, torch.Tensor]:
    n = batch["input_ids"].shape[0] // world_size
    return {k: v[rank * n:(rank + 1) * n] for k, v in batch.items()}


class Run:
    """Model, optimizer and schedule of one process, built the way the trainer builds them."""

    def __init__(self, cfg: Config, par: Any, total_steps: int):
        self.cfg, self.par = cfg, par
        seed_everything(cfg.training.seed)
        self.raw = DiffusionTransformer(cfg.model)
        self.model = par.wrap_model(self.raw)
        self.objective = MDLMObjective.from_config(cfg.objective, cfg.model)
        self.optimizer, self.groups = par.build_optimizer(self.raw, cfg.optimizer)
        self.scheduler = make_scheduler(self.optimizer, cfg.optimizer, total_steps, cfg.optimizer.warmup_iteration)
        self.grad_norms: list[float] = []
        self.grads: list[dict[str, torch.Tensor]] = []  # each step's averaged, clipped gradients

    def step(self, micro_batches: list[dict[str, torch.Tensor]]) -> float:
        par, accum = self.par, len(micro_batches)
        local = [rank_slice(b, par.rank, par.world_size) for b in micro_batches]
        tokens = torch.stack([b["attention_mask"].sum() for b in local]).sum().float()
        normalizer = par.all_reduce_sum(tokens) / par.world_size
        loss_sum = torch.zeros(())
        for i, b in enumerate(local):
            with par.no_sync(self.model) if i < accum - 1 else contextlib.nullcontext():
                loss, _ = self.objective.loss_at(self.model, b["input_ids"], b["attention_mask"], b["t"],
                                                 b["masked"], normalizer)
                loss.backward()
            loss_sum += loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.cfg.optimizer.grad_clip)
        self.grad_norms.append(norm.item())
        self.grads.append({n: p.grad.detach().clone()
                           for n, p in self.raw.named_parameters(remove_duplicate=False) if p.grad is not None})
        par.optimizer_step(self.optimizer, None)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return par.all_reduce_sum(loss_sum).item() / par.world_size

    def save(self, directory: Path) -> None:
        """What a trainer checkpoint holds of model and optimizer (same files, same roles per rank)."""
        self.par.settle_parameters(self.optimizer)  # as the trainer does before reading weights
        if self.par.is_main:
            directory.mkdir(parents=True, exist_ok=True)
        self.par.barrier()
        self.par.save_optimizer(self.optimizer, directory)
        if self.par.is_main:
            torch.save(self.raw.state_dict(), directory / "model.pt")
            torch.save(self.scheduler.state_dict(), directory / "scheduler.pt")
        self.par.barrier()

    def load(self, directory: Path) -> None:
        self.raw.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
        self.par.load_optimizer(self.optimizer, directory)
        self.scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=False))

    def params(self) -> dict[str, torch.Tensor]:
        self.par.settle_parameters(self.optimizer)
        return {k: v.detach().clone() for k, v in self.raw.state_dict().items()}
