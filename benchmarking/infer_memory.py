"""Will a sampling setting fit? An estimate of the memory one generation needs, checked before a model is loaded.

The estimate is deliberately simple and errs high: every weight once in the chosen dtype, the widest layer's
activations for the whole batch, and the logits with the sampler's working copies. On a Jetson the CPU and GPU
share one memory, so a setting that does not fit does not fail cleanly: the kernel's OOM killer or a swap storm
ends it. Refusing up front (exit 2) is cheaper than finding out there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from benchmarking.common import device_memory

# d_model-wide tensors alive at once in one block's forward: the residual stream (fp32 when residual_in_fp32),
# its normalised copy, q, k, v, the attention output and the block output.
D_WIDE = 7
# Per logit: the model's output in its dtype, a float32 copy for the softmax and the sampler's two float64
# [..., V] buffers (noise and softmax in `csrc.draw_reference`, the fallback's path).
LOGIT_EXTRA_BYTES = 4 + 8 + 8


@dataclass(frozen=True)
class MemoryEstimate:
    batch: int
    length: int
    weights: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.logits

    def record(self) -> dict[str, Any]:
        return {"batch": self.batch, "gen_len": self.length, "weights_bytes": self.weights,
                "activations_bytes": self.activations, "logits_bytes": self.logits, "total_bytes": self.total}


def count_params(model_cfg: Any) -> int:
    """Parameters of the family `model_cfg` describes, built on the meta device (no memory, no weights read)."""
    import torch

    from diffusionlm.models import build_model
    from diffusionlm.ops import PYTORCH

    with torch.device("meta"):
        model = build_model(model_cfg, PYTORCH)
    return sum(p.numel() for p in model.parameters())


def estimate(model_cfg: Any, params: int, batch: int, length: int, dtype_bytes: int) -> MemoryEstimate:
    d = model_cfg.d_model
    ffn = getattr(model_cfg, "ffn_hidden", None) or 4 * d  # SwiGLU's default is narrower: an upper bound
    heads = getattr(model_cfg, "n_heads", 1)
    positions = batch * length
    # the MLP's gate and up projections and their product, plus attention scores if the math path runs
    activations = positions * (D_WIDE * d + 3 * ffn) * 4 + batch * heads * length * length * 4
    logits = positions * model_cfg.vocab_size * (dtype_bytes + LOGIT_EXTRA_BYTES)
    return MemoryEstimate(batch, length, params * dtype_bytes, activations, logits)


def total_memory(device: Any) -> int:
    """The device's memory in bytes: the GPU's as CUDA reports it, else the machine's RAM."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def budget_bytes(device: Any, budget_gb: float | None, estimate_device: str | None) -> tuple[int, str]:
    """(budget, where it came from): --memory-budget-gb, else the named edge device's usable memory (its total
    less the reserve in benchmarking/common.py), else this device's total memory."""
    if budget_gb is not None:
        return int(budget_gb * 2**30), "--memory-budget-gb"
    if estimate_device is not None:
        usable = device_memory(estimate_device)
        if usable is not None:
            return usable, f"{estimate_device} usable memory (total less its reserve)"
    return total_memory(device), f"total memory of {device}"


def refusal(estimates: list[MemoryEstimate], budget: int, source: str, dtype: str) -> str | None:
    """The message for the settings that do not fit, None when all do."""
    over = [e for e in estimates if e.total > budget]
    if not over:
        return None
    lines = [f"batch {e.batch} x gen-len {e.length} in {dtype} needs an estimated {e.total / 2**30:.2f} GiB "
             f"(weights {e.weights / 2**30:.2f}, activations {e.activations / 2**30:.2f}, "
             f"logits {e.logits / 2**30:.2f}), more than the budget of {budget / 2**30:.2f} GiB ({source})"
             for e in over]
    return "error: setting does not fit in memory (--batch-sizes/--gen-len/--memory-budget-gb):\n  " + "\n  ".join(
        lines)
