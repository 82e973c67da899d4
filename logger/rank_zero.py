"""Only rank 0 of a distributed job talks; the other ranks stay silent."""

from __future__ import annotations

from pathlib import Path

from logger.base import Logger


class RankZeroLogger:
    def __init__(self, inner: Logger, rank: int) -> None:
        self.inner = inner
        self.rank = rank

    @property
    def active(self) -> bool:
        return self.rank == 0

    def log(self, metrics: dict[str, float | int], step: int) -> None:
        if self.active:
            self.inner.log(metrics, step)

    def log_config(self, config: dict) -> None:
        if self.active:
            self.inner.log_config(config)

    def log_artifact(self, path: str | Path, name: str, kind: str) -> None:
        if self.active:
            self.inner.log_artifact(path, name, kind)

    def info(self, message: str) -> None:
        if self.active:
            self.inner.info(message)

    def finish(self) -> None:
        if self.active:
            self.inner.finish()
