"""NVTX levels, the range names the trainer and sampler use, and the range objects themselves.

Keeping the names here lets the README's nsys commands and `nsys stats` filters refer to stable strings.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

DOMAIN = "diffusionlm"
LEVELS = ("coarse", "fine", "verbose")
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
# Rank that no level reaches: every range() call is then a null context.
OFF = -1

ENV_ENABLE = "DIFFUSIONLM_NVTX"
ENV_LEVEL = "DIFFUSIONLM_NVTX_LEVEL"

# coarse
TRAIN_STEP = "train_step"
DATA_WAIT = "data_wait"
FORWARD = "forward"
BACKWARD = "backward"
OPTIMIZER_STEP = "optimizer_step"
CHECKPOINT = "checkpoint"
EVAL = "eval"
GENERATE = "generate"
# fine
LOSS = "loss"
GRAD_CLIP = "grad_clip"
ALL_REDUCE = "all_reduce"
SAMPLING_STEP = "sampling_step"

# One shared object for every disabled range: returning it allocates nothing and formats nothing.
NULL_RANGE = contextlib.nullcontext()

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def resolve_nvtx(cfg_enabled: bool, cfg_level: str) -> tuple[bool, str]:
    """(enabled, level) from the environment, falling back to the config: the env wins."""
    enabled = cfg_enabled
    raw = os.environ.get(ENV_ENABLE)
    if raw is not None:
        value = raw.strip().lower()
        if value not in _TRUE | _FALSE:
            raise ValueError(f"{ENV_ENABLE}={raw!r}: expected 1/0, true/false, yes/no or on/off")
        enabled = value in _TRUE
    level = os.environ.get(ENV_LEVEL, "").strip().lower() or cfg_level
    if level not in LEVEL_RANK:
        raise ValueError(f"NVTX level {level!r} (from {ENV_LEVEL} or profiling.nvtx_level): expected one of {LEVELS}")
    return enabled, level


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
