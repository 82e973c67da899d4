"""The `metrics.jsonl` sink every run writes, whatever the display backend."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from logger.records import make_record, to_json_line


class JsonlFileLogger:
    """Appends one JSON line per `log` call to a file, flushed at once so a killed run loses nothing."""

    def __init__(self, path: str | Path, start_time: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start_time = time.monotonic() if start_time is None else start_time
        needs_newline = _ends_mid_line(self.path)
        self._file = self.path.open("a", encoding="utf-8")
        if needs_newline:
            # A previous run was killed mid-line: start ours on a fresh line so both stay parseable.
            self._file.write("\n")

    def write_line(self, line: str) -> None:
        if self._file is None:
            return
        self._file.write(line + "\n")
        self._file.flush()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.write_line(to_json_line(make_record(metrics, step, time.monotonic() - self.start_time)))

    def log_config(self, config: dict) -> None:
        pass

    def log_artifact(self, path: str | Path, name: str, kind: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_mid_line(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) != b"\n"
