"""Where a run lives on disk: `<output_dir>/<run_name>/`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from config.schema import Config


def default_run_name(cfg: Config) -> str:
    size = cfg.model.size or f"d{cfg.model.d_model}l{cfg.model.n_layers}"
    return f"{size}-{time.strftime('%Y%m%d-%H%M%S')}"


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
