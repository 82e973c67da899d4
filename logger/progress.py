"""Training progress for humans: a rich bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

# Plain mode prints about this many lines over a whole run.
_PLAIN_LINES_PER_RUN = 20


def _format_fields(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


class NullProgress:
    def update(self, step: int, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """One line every ~5% of the run (and at the last step) on stderr, for logs read later."""

    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None) -> None:
        self.total = total
        self.every = max(1, total // _PLAIN_LINES_PER_RUN)
        self._stream = stream
        self._start_step = start
        self._start_time = time.monotonic()

    def update(self, step: int, **fields: Any) -> None:
        if step % self.every != 0 and step != self.total:
            return
        done = step - self._start_step
        elapsed = time.monotonic() - self._start_time
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = f" eta {(self.total - step) / rate:.0f}s" if rate > 0 else ""
        line = f"step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%){eta}"
        extra = _format_fields(fields)
        stream = self._stream or sys.stderr
        stream.write(f"{line} {extra}".rstrip() + "\n")
        stream.flush()

    def close(self) -> None:
        pass


class RichProgress:
    def __init__(
        self, total: int, start: int = 0, stream: TextIO | None = None, force_terminal: bool = False
    ) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(file=stream or sys.stderr, force_terminal=force_terminal or None)
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, info="")
        self._progress.start()

    def update(self, step: int, **fields: Any) -> None:
        self._progress.update(self._task, completed=step, info=_format_fields(fields))

    def close(self) -> None:
        self._progress.stop()


def make_progress(
    total: int, enabled: str, start: int = 0, stream: TextIO | None = None
) -> NullProgress | PlainProgress | RichProgress:
    """`enabled` is logging.progress_bar: "on" forces the rich bar, "auto" shows it on a terminal and stays
    quiet otherwise (the console backend already prints every log step), "off" shows nothing (the trainer
    passes it on non-zero ranks). "plain" (API only) prints a plain line every ~5% of the run."""
    if enabled not in ("auto", "on", "off", "plain"):
        raise ValueError(f"progress_bar must be auto, on or off, not {enabled!r}")
    target = stream or sys.stderr
    is_tty = bool(getattr(target, "isatty", lambda: False)())
    if enabled == "on" or (enabled == "auto" and is_tty):
        return RichProgress(total, start, stream, force_terminal=enabled == "on")
    if enabled == "plain":
        return PlainProgress(total, start, stream)
    return NullProgress()
