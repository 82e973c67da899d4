"""Resuming a run after a crash or a restart: make its metrics.jsonl agree with the checkpoint.

Steps after the checkpoint were logged by the run that died and will be logged again by the resumed
one; the appending logger would then hold them twice. Rank 0 drops them before the logger opens the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from config.schema import Config
from diffusionlm.training import checkpoint as ckpt


def truncate_metrics_after(metrics: Path, step: int) -> int:
    """Keep the records with step <= `step` (and lines that are not records); returns how many were dropped.

    A line cut short by a kill does not parse and is dropped too. Rewritten atomically.
    """
    if not metrics.is_file():
        return 0
    kept, dropped = [], 0
    for line in metrics.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        tmp = metrics.with_name(metrics.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, metrics)
    return dropped


def checkpoint_to_resume(cfg: Config, resume: str | None) -> Path | None:
    """The checkpoint the trainer will resume from (None: a fresh start or an error the trainer reports)."""
    if resume is None or (resume == "auto" and cfg.logging.run_name is None):
        return None
    run_root = Path(cfg.logging.output_dir) / cfg.logging.run_name if cfg.logging.run_name else None
    try:
        if resume == "auto":
            return ckpt.resolve_resume("auto", run_root / "checkpoints")
        return ckpt.resolve_resume(resume, Path(resume))
    except ckpt.CheckpointError:
        return None


def align_metrics_with_checkpoint(cfg: Config, resume: str | None) -> int:
    """Rank 0, before training: drop metrics logged after the checkpoint being resumed."""
    path = checkpoint_to_resume(cfg, resume)
    if path is None:
        return 0
    step = ckpt.read_meta(path)["step"]
    return truncate_metrics_after(path.parent.parent / "metrics.jsonl", step)
