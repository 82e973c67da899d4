"""Checkpoint directories: written atomically, pruned to the latest K, found again on resume.

Layout of `runs/<run>/checkpoints/step_<N>/`:
  model.pt          model state_dict (rank 0)
  optimizer*.pt     written by the parallel context (one file, or one shard per rank)
  trainer.pt        step counters, scheduler, scaler, bad-step count (rank 0)
  rng_rank<r>.pt    every RNG of rank r;  data_rank<r>.pt: rank r's data-stream state
  config.toml, tokenizer.json, meta.json (world size, step; written last, marks the directory complete)
A save goes to `step_<N>.tmp` and is renamed when complete, so a kill mid-save never leaves a
broken latest checkpoint; `.tmp` leftovers are ignored and cleaned up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    pass


def checkpoint_dirs(checkpoints_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not checkpoints_root.is_dir():
        return []
    found = []
    for d in checkpoints_root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and (d / "meta.json").is_file():
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def latest_checkpoint(checkpoints_root: Path) -> Path | None:
    dirs = checkpoint_dirs(checkpoints_root)
    return dirs[-1] if dirs else None


def temp_dir_for(checkpoints_root: Path, step: int) -> Path:
    return checkpoints_root / f"step_{step}.tmp"


def begin_save(checkpoints_root: Path, step: int) -> Path:
    """Rank 0: create a fresh temp directory for the checkpoint of `step`."""
    tmp = temp_dir_for(checkpoints_root, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rank_state(tmp: Path, rank: int, rng_state: dict[str, Any], data_state: dict[str, Any] | None) -> None:
    torch.save(rng_state, tmp / f"rng_rank{rank}.pt")
    if data_state is not None:
        torch.save(data_state, tmp / f"data_rank{rank}.pt")


def finish_save(tmp: Path, step: int, world_size: int, keep_last: int) -> Path:
    """Rank 0, after every rank wrote its part: mark complete, rename into place, prune old ones."""
    meta = {"step": step, "world_size": world_size, "format": 1}
    (tmp / "meta.json").write_text(json.dumps(meta))
    final = tmp.with_name(f"step_{step}")
    if final.exists():  # re-saving the same step (e.g. a resumed run saving at its start step)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dirs(final.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in final.parent.glob("step_*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def read_meta(ckpt: Path) -> dict[str, Any]:
    meta_path = ckpt / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint (no meta.json)")
    return json.loads(meta_path.read_text())


def load_rank_file(ckpt: Path, prefix: str, rank: int) -> Any | None:
    path = ckpt / f"{prefix}_rank{rank}.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def resolve_resume(resume: str | None, checkpoints_root: Path) -> Path | None:
    """`auto` -> latest complete checkpoint of this run (or None: fresh start); a path -> that checkpoint."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(checkpoints_root)
    path = Path(resume)
    if path.is_dir() and not (path / "meta.json").is_file():
        # a run directory or its checkpoints/ folder: take the latest complete one inside
        inner = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if inner is not None:
            return inner
    if not path.is_dir():
        raise CheckpointError(f"--resume {resume}: no such checkpoint directory")
    read_meta(path)
    return path
