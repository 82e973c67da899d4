"""Checks a run makes before it writes anything: which checkpoint to resume, whether the run directory can be
written, and whether the disk holds the checkpoints the run will keep. Each returns the user's message rather
than raising, so rank 0 can decide and broadcast one answer that every rank acts on."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch.nn as nn

from diffusionlm.training import checkpoint as ckpt
from diffusionlm.training.checkpoint import CheckpointError
from diffusionlm.training.run_dir import RunDir, write_probe

MIB = 1 << 20


def choose_checkpoint(resume: str | None, run: RunDir, world_size: int,
                      warn: Callable[[str], None]) -> Path | str | None:
    """The checkpoint to resume (None: a fresh start), or why there is none to resume."""
    try:
        return ckpt.resolve_resume(resume, run.checkpoints, world_size, warn)
    except CheckpointError as e:
        return str(e)


def unwritable(run: RunDir) -> str | None:
    """Create the run directory and checkpoints/ and prove that files can be written in them."""
    for d in (run.root, run.checkpoints):
        error = write_probe(d)
        if error is not None:
            return (f"cannot write to {d}: {error.strerror or error}; checkpoints could not be saved. Make it "
                    "writable or choose another logging.output_dir")
    return None


def checkpoint_size_estimate(model: nn.Module, run: RunDir, world_size: int) -> int:
    """Bytes one checkpoint takes: the weights, twice their size in optimizer state (Adam's two moments; Muon
    keeps less), the tokenizer and the small per-rank files; or the newest checkpoint's size when larger."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in model.state_dict().values()}
    estimate = 3 * sum(storages.values()) + run.tokenizer.stat().st_size + (1 << 16) * (1 + world_size)
    latest = ckpt.latest_checkpoint(run.checkpoints)
    return max(estimate, ckpt.checkpoint_bytes(latest)) if latest is not None else estimate


def disk_space(model: nn.Module, run: RunDir, keep_last: int, world_size: int) -> tuple[str, str] | None:
    """("refuse", why) when the disk cannot hold one more checkpoint, ("warn", why) when it cannot hold the
    `keep_last + 1` a run keeps while saving the next; None when there is room."""
    size = checkpoint_size_estimate(model, run, world_size)
    free = shutil.disk_usage(run.checkpoints).free
    existing = len(ckpt.checkpoint_dirs(run.checkpoints))
    want = max(1, keep_last + 1 - existing)
    if free < size:
        return ("refuse", f"not enough disk space for a checkpoint in {run.checkpoints}: {free / MIB:.1f} MiB free, "
                          f"one checkpoint takes about {size / MIB:.1f} MiB. Free some space or choose another "
                          "logging.output_dir")
    if free < want * size:
        return ("warn", f"warning: {free / MIB:.1f} MiB free in {run.checkpoints}, room for {free // size} of the "
                        f"{want} more checkpoints of about {size / MIB:.1f} MiB this run keeps (checkpoint.keep_last "
                        f"= {keep_last}, plus the one being saved); saves may fail later")
    return None
