"""Picks the backend from the [logging] config and wires the metrics.jsonl sink into it."""

from __future__ import annotations

from pathlib import Path

from config.schema import LoggingConfig, WandbConfig
from logger.base import Logger
from logger.console import ConsoleLogger, NoopLogger
from logger.jsonl import JsonlFileLogger

METRICS_FILE = "metrics.jsonl"


def build_logger(
    logging_cfg: LoggingConfig,
    wandb_cfg: WandbConfig,
    run_dir: Path,
    rank: int = 0,
    run_name: str | None = None,
) -> Logger:
    """The run's logger. Ranks other than 0 get a silent logger that writes nothing at all."""
    if rank != 0:
        return NoopLogger()
    run_dir = Path(run_dir)
    sink = JsonlFileLogger(run_dir / METRICS_FILE)
    backend = logging_cfg.backend
    if backend == "console":
        return ConsoleLogger(sink=sink)
    if backend == "noop":
        return NoopLogger(sink=sink)
    if backend == "wandb":
        from logger.wandb_logger import WandbLogger

        try:
            return WandbLogger(wandb_cfg, run_dir, run_name=run_name or logging_cfg.run_name, sink=sink)
        except BaseException:
            sink.finish()
            raise
    raise ValueError(f"unknown logging.backend {backend!r} (expected console, wandb or noop)")
