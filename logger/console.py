"""Console and no-op backends; both mirror their metrics into `metrics.jsonl` when given a sink."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from logger.jsonl import JsonlFileLogger
from logger.records import make_record, to_json_line
from logger.redact import redact, redact_text


class _MirroredLogger:
    """Shared part: builds each JSON line once so the console and metrics.jsonl never disagree."""

    def __init__(self, sink: JsonlFileLogger | None, start_time: float | None) -> None:
        self.sink = sink
        if start_time is None:
            start_time = sink.start_time if sink is not None else time.monotonic()
        self.start_time = start_time

    def _line(self, metrics: dict[str, Any], step: int) -> str:
        line = to_json_line(make_record(metrics, step, time.monotonic() - self.start_time))
        if self.sink is not None:
            self.sink.write_line(line)
        return line

    def log_artifact(self, path: str | Path, name: str, kind: str) -> None:
        pass

    def finish(self) -> None:
        if self.sink is not None:
            self.sink.finish()


class ConsoleLogger(_MirroredLogger):
    """JSON lines on stdout (machine-readable), human messages on stderr."""

    def __init__(
        self,
        sink: JsonlFileLogger | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        start_time: float | None = None,
    ) -> None:
        super().__init__(sink, start_time)
        # Resolved lazily so pytest's capsys (which swaps sys.stdout) sees the output.
        self._stdout = stdout
        self._stderr = stderr

    def log(self, metrics: dict[str, float | int], step: int) -> None:
        out = self._stdout or sys.stdout
        out.write(self._line(metrics, step) + "\n")
        out.flush()

    def log_config(self, config: dict) -> None:
        self.info("config: " + json.dumps(redact(config), sort_keys=True, default=str))

    def info(self, message: str) -> None:
        err = self._stderr or sys.stderr
        err.write(redact_text(message) + "\n")
        err.flush()


class NoopLogger(_MirroredLogger):
    """No console output; still writes metrics.jsonl when given a sink (every run dir has one)."""

    def __init__(self, sink: JsonlFileLogger | None = None, start_time: float | None = None) -> None:
        super().__init__(sink, start_time)

    def log(self, metrics: dict[str, float | int], step: int) -> None:
        if self.sink is not None:
            self._line(metrics, step)

    def log_config(self, config: dict) -> None:
        pass

    def info(self, message: str) -> None:
        pass
