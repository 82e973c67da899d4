"""Saving and restoring a Trainer's whole state through the checkpoint directories of checkpoint.py.

The files hold `Trainer.state_dict()`: rank 0 writes the model and the trainer state, every rank its RNG
and data-stream parts, and `parallel` the optimizer (one file, or one shard per rank); barriers order the
steps so the directory is renamed into place only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from config import config_to_toml
from diffusionlm.training import checkpoint as ckpt
from diffusionlm.training.checkpoint import CheckpointError

if TYPE_CHECKING:
    from diffusionlm.training.trainer import Trainer


def save_trainer_checkpoint(trainer: Trainer) -> Path:
    """Write the trainer's complete state as checkpoint `step_<micro_step>` (every rank takes part)."""
    par = trainer.parallel
    par.settle_parameters(trainer.optimizer)
    with trainer.profiler.range("checkpoint"):
        state = trainer.state_dict()
        tmp = ckpt.temp_dir_for(trainer.run.checkpoints, trainer.micro_step)
        if par.is_main:
            ckpt.begin_save(trainer.run.checkpoints, trainer.micro_step)
        par.barrier()
        ckpt.write_rank_state(tmp, par.rank, state["rng"], state["data"])
        par.save_optimizer(trainer.optimizer, tmp)
        if par.is_main:
            torch.save(state["model"], tmp / "model.pt")
            torch.save({**state["counters"], "scheduler": state["scheduler"], "scaler": state["scaler"]},
                       tmp / "trainer.pt")
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
    saved = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    same_world = meta["world_size"] == par.world_size
    trainer.load_state_dict({
        "model": torch.load(path / "model.pt", map_location=trainer.device, weights_only=True),
        "counters": {"micro_step": saved["micro_step"], "bad_steps": saved["bad_steps"]},
        "scheduler": saved["scheduler"],
        "scaler": saved["scaler"],
        "rng": ckpt.load_rank_file(path, "rng", par.rank) if same_world else None,
        "data": ckpt.load_rank_file(path, "data", par.rank) if same_world else None,
    })
    try:
        par.load_optimizer(trainer.optimizer, path)
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(f"cannot resume from {path}: {e}") from None
    if not same_world:
        trainer.logger.info(
            f"warning: checkpoint written by {meta['world_size']} ranks, resuming on {par.world_size}: "
            "model and optimizer restored exactly; data order and RNG streams restart"
        )
