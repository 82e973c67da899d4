"""Where a run lives on disk: `<output_dir>/<run_name>/`."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from config.schema import Config


def default_run_name(cfg: Config) -> str:
    label = getattr(cfg.model, "size", None) or cfg.model.family
    return f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"


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


def write_probe(directory: Path) -> OSError | None:
    """Create `directory` if needed, then write, sync and remove a small file in it: the error a checkpoint save
    would meet there (read-only, no permission, no space), or None. Root ignores permission bits, not these."""
    probe = directory / f".write-test-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink()
        return e
    return None
