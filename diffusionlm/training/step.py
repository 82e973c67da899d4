"""One optimizer step's statistics, as the trainer's `step()` returns them on both of its paths.

On CUDA with fused AdamW the trainer reads a step's statistics one step late, so the GPU never drains
between steps; elsewhere it reads them at once. Either way they arrive as a `StepStats`: a device vector
copied to pinned host memory without blocking, read on first access.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

STAT_NAMES = ("loss", "masked_ce", "masked_acc", "grad_l2_norm", "tokens", "dropped", "skipped", "stop", "masked")


class StepStats(Mapping[str, float]):
    """One optimizer step's statistics, copied to pinned host memory without blocking; read on first access.

    `values` is a vector in the order of STAT_NAMES (all ranks' sums, averaged where a mean is meant;
    `masked` counts the positions the loss scored). Reading waits for this step's copy only (an
    event), not for work queued after it, so a trainer can queue the next step before it reads this one.
    """

    def __init__(self, values: torch.Tensor, step: int, data_wait_s: float):
        self.step, self.settled = step, False
        self._host = torch.empty(values.shape, dtype=torch.float64, pin_memory=values.is_cuda)
        self._host.copy_(values.double(), non_blocking=True)
        self._event = torch.cuda.Event() if values.is_cuda else None
        if self._event is not None:
            self._event.record()
        self._data_wait_s = data_wait_s
        self._values: dict[str, float] | None = None
        self._stop = False

    @property
    def ready(self) -> bool:
        return self._values is not None or self._event is None or self._event.query()

    def _resolve(self) -> dict[str, float]:
        if self._values is None:
            if self._event is not None:
                self._event.synchronize()
            raw = dict(zip(STAT_NAMES, self._host.tolist()))
            self._values = {f"metrics.{k}": raw[k] for k in ("loss", "masked_ce", "masked_acc", "grad_l2_norm",
                                                            "tokens")}
            self._values["metrics.data_wait_s"] = self._data_wait_s
            self._values["metrics.skipped_step"] = raw["skipped"]
            self._values["metrics.dropped_masked"] = raw["dropped"]
            self._values["metrics.num_masked"] = raw["masked"]
            self._stop = raw["stop"] > 0
        return self._values

    @property
    def stop_requested(self) -> bool:
        """Some rank had received a stop signal when this step was queued."""
        self._resolve()
        return self._stop

    def __getitem__(self, key: str) -> float:
        return self._resolve()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __len__(self) -> int:
        return len(self._resolve())
