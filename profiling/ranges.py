"""NVTX levels and the range objects themselves."""

from __future__ import annotations

import contextlib
from typing import Any

DOMAIN = "diffusionlm"
LEVELS = ("coarse", "fine", "verbose")
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
# Rank that no level reaches: every range() call is then a null context.
OFF = -1

# One shared object for every disabled range: returning it allocates nothing and formats nothing.
NULL_RANGE = contextlib.nullcontext()


class NvtxRange:
    """A reusable, re-entrant named range: NVTX push/pop, plus a torch.profiler label while a trace records.

    Built once per name (event attributes registered up front), so entering it costs two C calls.
    """

    __slots__ = ("_attributes", "_domain", "_labels", "_tracing", "name")

    def __init__(self, domain: Any, name: str, tracing: list[bool]) -> None:
        self.name = name
        self._domain = domain
        self._attributes = domain.get_event_attributes(message=name) if domain is not None else None
        # Shared one-element list owned by the Profiler: whether a torch.profiler window is recording.
        self._tracing = tracing
        self._labels: list[Any] = []

    def __enter__(self) -> NvtxRange:
        if self._domain is not None:
            self._domain.push_range(self._attributes)
        if self._tracing[0]:
            import torch

            label = torch.autograd.profiler.record_function(self.name)
            label.__enter__()
            self._labels.append(label)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._labels:
            self._labels.pop().__exit__(None, None, None)
        if self._domain is not None:
            self._domain.pop_range()
