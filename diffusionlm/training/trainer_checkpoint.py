"""Saving and restoring a Trainer's whole state through the checkpoint directories of checkpoint.py.

Rank 0 writes the model and trainer state; every rank writes its RNG, data-stream and optimizer parts;
barriers order the steps so the directory is renamed into place only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from config import config_to_toml
from diffusionlm.training import checkpoint as ckpt
from diffusionlm.training.checkpoint import CheckpointError
from diffusionlm.training.rng import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    from diffusionlm.training.trainer import Trainer


def save_trainer_checkpoint(trainer: Trainer) -> Path:
    """Write the trainer's complete state as checkpoint `step_<micro_step>` (every rank takes part)."""
    par = trainer.parallel
    par.settle_parameters(trainer.optimizer)
    with trainer.profiler.range("checkpoint"):
        tmp = ckpt.temp_dir_for(trainer.run.checkpoints, trainer.micro_step)
        if par.is_main:
            ckpt.begin_save(trainer.run.checkpoints, trainer.micro_step)
        par.barrier()
        ckpt.write_rank_state(tmp, par.rank, capture_rng_state(trainer.generator), trainer.stream.state_dict())
        par.save_optimizer(trainer.optimizer, tmp)
        if par.is_main:
            torch.save(trainer.raw_model.state_dict(), tmp / "model.pt")
            torch.save({
                "micro_step": trainer.micro_step,
                "bad_steps": trainer.bad_steps,
                "scheduler": trainer.scheduler.state_dict(),
                "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
            }, tmp / "trainer.pt")
            (tmp / "config.toml").write_text(config_to_toml(trainer.cfg))
            (tmp / "tokenizer.json").write_bytes(trainer.run.tokenizer.read_bytes())
        par.barrier()
        final = trainer.run.checkpoints / f"step_{trainer.micro_step}"
        if par.is_main:
            ckpt.finish_save(tmp, trainer.micro_step, par.world_size, trainer.cfg.checkpoint.keep_last)
            if trainer.cfg.wandb.log_checkpoints:
                trainer.logger.log_artifact(final, f"{trainer.run_name}-step{trainer.micro_step}", "model")
        par.barrier()
    return final


def load_trainer_checkpoint(trainer: Trainer, path: Path) -> None:
    """Restore model, optimizer, scheduler, counters and (same world size) RNG and data position."""
    par = trainer.parallel
    meta = ckpt.read_meta(path)
    trainer.raw_model.load_state_dict(torch.load(path / "model.pt", map_location=trainer.device, weights_only=True))
    try:
        par.load_optimizer(trainer.optimizer, path)
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(f"cannot resume from {path}: {e}") from None
    state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    trainer.micro_step = state["micro_step"]
    trainer.bad_steps = state["bad_steps"]
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.scaler is not None and state["scaler"] is not None:
        trainer.scaler.load_state_dict(state["scaler"])
    same_world = meta["world_size"] == par.world_size
    rng = ckpt.load_rank_file(path, "rng", par.rank) if same_world else None
    data = ckpt.load_rank_file(path, "data", par.rank) if same_world else None
    if rng is not None:
        restore_rng_state(rng, trainer.generator)
    if data is not None:
        trainer.stream.load_state_dict(data)
    else:
        trainer.logger.info(
            f"warning: checkpoint written by {meta['world_size']} ranks, resuming on {par.world_size}: "
            "model and optimizer restored exactly; data order and RNG streams restart"
        )
