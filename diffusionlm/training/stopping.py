"""Graceful stops: SIGINT/SIGTERM finish the current step, then the trainer checkpoints and exits.

Across data-parallel ranks a stop must be *agreed*: a rank that left the loop on its own signal would leave
the others waiting in a collective. So a received signal only raises this rank's flag; the flags travel
with the step's all-reduced statistics, and every rank stops once the reduced flag says so, after the same
step. With one process there is nobody to agree with and the stop is agreed at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from typing import Any


class StopRequests:
    def __init__(self, world_size: int, log: Callable[[str], None]):
        self.world_size, self.log = world_size, log
        self.received: int | None = None  # a signal this process received
        self.agreed: int | None = None  # the stop every rank acts on
        self._previous: dict[int, Any] = {}

    @property
    def flag(self) -> float:
        """This rank's vote, summed over ranks with the step's statistics."""
        return float(self.received is not None)

    def agree(self) -> None:
        """Some rank asked to stop (seen in the all-reduced flag): stop after this step."""
        if self.agreed is None:  # this rank's own signal, or SIGTERM for one another rank received
            self.agreed = self.received or signal.SIGTERM

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.received = signum
        if self.world_size == 1:
            self.agreed = signum
        self.log(f"received signal {signum}: finishing the step, then writing a checkpoint")

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Outside the main thread (a notebook worker, say) handlers cannot be set: no graceful stop there.
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
