"""The logging interface the trainer talks to, whatever the backend."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Logger(Protocol):
    def log(self, metrics: dict[str, float | int], step: int) -> None:
        """Record one set of metrics (keys already prefixed, e.g. `metrics.loss`) at micro-step `step`."""

    def log_config(self, config: dict) -> None:
        """Record the resolved run config once at start (secrets are redacted by the backend)."""

    def log_artifact(self, path: str | Path, name: str, kind: str) -> None:
        """Attach a file or directory (e.g. a checkpoint) to the run; a no-op where unsupported."""

    def info(self, message: str) -> None:
        """A human-readable line (startup summary, warnings)."""

    def finish(self) -> None:
        """Flush and close; safe to call twice."""
