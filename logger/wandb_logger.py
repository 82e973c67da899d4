"""Weights & Biases backend (online or offline); wandb is imported only when this backend is built."""

from __future__ import annotations

import os
import re
import secrets
import string
import sys
from pathlib import Path
from typing import Any

from config.schema import WandbConfig
from logger.console import _MirroredLogger
from logger.jsonl import JsonlFileLogger
from logger.redact import redact, redact_text

WANDB_ID_FILE = "wandb_id.txt"
_CHECKPOINT_KINDS = ("model", "checkpoint")


def stable_run_id(run_dir: Path) -> str:
    """The wandb run id of this run dir: created once, reused on resume so the curves continue."""
    id_file = run_dir / WANDB_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text(encoding="utf-8").strip()
        if run_id:
            return run_id
    # wandb run ids: lowercase letters and digits; 12 random characters never collide in practice.
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id + "\n", encoding="utf-8")
    return run_id


def resolve_mode(cfg_mode: str) -> str:
    # WANDB_MODE in the environment beats the config so `WANDB_MODE=offline diffusionlm-train` just works.
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return cfg_mode


class WandbLogger(_MirroredLogger):
    def __init__(
        self,
        wandb_cfg: WandbConfig,
        run_dir: str | Path,
        run_name: str | None = None,
        sink: JsonlFileLogger | None = None,
        start_time: float | None = None,
    ) -> None:
        super().__init__(sink, start_time)
        import wandb

        self.cfg = wandb_cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=wandb_cfg.project,
            entity=wandb_cfg.entity,
            name=run_name,
            dir=str(self.run_dir),
            mode=resolve_mode(wandb_cfg.mode),
            tags=list(wandb_cfg.tags) or None,
            id=stable_run_id(self.run_dir),
            resume="allow",
        )
        self._finished = False

    def log(self, metrics: dict[str, float | int], step: int) -> None:
        self._line(metrics, step)
        self.run.log({key: _plain(value) for key, value in metrics.items()}, step=int(step))

    def log_config(self, config: dict) -> None:
        self.run.config.update(redact(config), allow_val_change=True)

    def log_artifact(self, path: str | Path, name: str, kind: str) -> None:
        if kind in _CHECKPOINT_KINDS and not self.cfg.log_checkpoints:
            return
        import wandb

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact path does not exist: {path}")
        artifact = wandb.Artifact(name=_artifact_name(name), type=kind)
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def info(self, message: str) -> None:
        sys.stderr.write(redact_text(message) + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if not self._finished:
            self._finished = True
            self.run.finish()
            import wandb

            # finish() can return before wandb-core has written the last records of an offline run;
            # teardown waits for the service, so the run files are complete when we return.
            wandb.teardown()
        super().finish()


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and callable(value.item) else value


def _artifact_name(name: str) -> str:
    # wandb accepts only letters, digits, '-', '_' and '.' in artifact names.
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", name).strip("-") or "artifact"
