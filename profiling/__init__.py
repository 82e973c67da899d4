"""Profiling: NVTX ranges (domain "diffusionlm"), an nsys/torch.profiler capture window, memory helpers.

Light at import: nvtx and the torch profiler are loaded only when a feature is switched on.
"""

from profiling import memory, ranges
from profiling.profiler import Profiler
from profiling.ranges import DOMAIN, LEVELS, NULL_RANGE

__all__ = ["DOMAIN", "LEVELS", "NULL_RANGE", "Profiler", "memory", "ranges"]
