"""CUDA allocator helpers: history, snapshots for pytorch.org/memory_viz, summaries. No-ops off CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_GIB = 1024**3


def _cuda_device(device: Any = None) -> Any:
    """The CUDA device to act on, or None when there is none (CPU runs, CPU-only builds)."""
    import torch

    if not torch.cuda.is_available():
        return None
    if device is None:
        return torch.device("cuda", torch.cuda.current_device())
    device = torch.device(device)
    return device if device.type == "cuda" else None


def start_history(device: Any = None, max_entries: int = 100_000) -> bool:
    """Start recording allocator events with stack traces; False when there is no CUDA device."""
    if _cuda_device(device) is None:
        return False
    import torch

    torch.cuda.memory._record_memory_history(max_entries=max_entries)
    return True


def stop_history(device: Any = None) -> bool:
    if _cuda_device(device) is None:
        return False
    import torch

    torch.cuda.memory._record_memory_history(enabled=None)
    return True


def dump_snapshot(path: str | Path, device: Any = None) -> bool:
    """Write the allocator snapshot (open it at https://pytorch.org/memory_viz); False when not on CUDA."""
    if _cuda_device(device) is None:
        return False
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.cuda.memory._dump_snapshot(str(path))
    return True


def memory_summary(device: Any = None) -> dict[str, float]:
    """Allocated, reserved and peak memory in GiB; {} when not on CUDA."""
    cuda = _cuda_device(device)
    if cuda is None:
        return {}
    import torch

    return {
        "allocated_gib": torch.cuda.memory_allocated(cuda) / _GIB,
        "reserved_gib": torch.cuda.memory_reserved(cuda) / _GIB,
        "peak_allocated_gib": torch.cuda.max_memory_allocated(cuda) / _GIB,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(cuda) / _GIB,
    }


def reset_peak(device: Any = None) -> bool:
    cuda = _cuda_device(device)
    if cuda is None:
        return False
    import torch

    torch.cuda.reset_peak_memory_stats(cuda)
    return True
