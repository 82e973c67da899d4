"""One resolved choice of kernels for a run: what `[kernels]` asked for, made concrete for a device.

`resolve_kernels` runs once, when a model is built; the model keeps the frozen `KernelPolicy` and hands it
to every op it calls. Under torch.compile the policy is a constant (a frozen dataclass on the module), so
checking it never breaks a graph. Per-call conditions that depend on shapes, dtypes and whether gradients
are wanted stay in the ops themselves.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal

import torch

from config.kernels import KernelsConfig
from diffusionlm.ops.dispatch import HAVE_TRITON, is_hopper


class KernelUnavailable(ValueError):
    """A kernel that `[kernels]` requires cannot run here; the message names the setting."""


@dataclass(frozen=True)
class KernelPolicy:
    """triton: "on" (CUDA tensors take the Triton kernels), "off", or "interpret" (CPU tensors too, through
    Triton's interpreter). attention: "sdpa" or "fa4" (cuDNN forward + FlashAttention-4 backward from
    fa4_min_scores scores per call). mlp: "pytorch", "triton", or "quack" (from quack_min_gate_up elements of
    the gate/up product per call; below it the Triton path). csrc: "on" where the compiled csrc/ ops are loaded
    and have kernels for the run's device, else "off" (their PyTorch fallbacks)."""

    triton: Literal["on", "off", "interpret"] = "off"
    attention: Literal["sdpa", "fa4"] = "sdpa"
    mlp: Literal["pytorch", "triton", "quack"] = "pytorch"
    fa4_min_scores: int = 1 << 27
    quack_min_gate_up: int = 150_000_000
    csrc: Literal["on", "off"] = "off"

    def uses_triton(self, t: torch.Tensor) -> bool:
        """Whether an op over `t` takes its Triton kernel."""
        return self.triton == "interpret" or (self.triton == "on" and t.is_cuda)

    def record(self) -> dict[str, Any]:
        """The policy as plain values, for the run's config, checkpoints and benchmark records."""
        return dataclasses.asdict(self)


# Every op's PyTorch path: what a model built without a policy runs, on any device.
PYTORCH = KernelPolicy()


def _triton(setting: str, device: torch.device) -> str:
    if setting == "off" or (setting == "auto" and not (HAVE_TRITON and device.type == "cuda")):
        return "off"
    if not HAVE_TRITON:
        raise KernelUnavailable(f"kernels.triton = {setting!r} needs the triton package (pip install triton)")
    if setting == "interpret":
        # The interpreter is chosen by Triton when it is first imported.
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            raise KernelUnavailable("kernels.triton = 'interpret' needs TRITON_INTERPRET=1 before Triton is "
                                    "imported (set it in the environment of the process)")
        os.environ["TRITON_INTERPRET"] = "1"
        return "interpret"
    if device.type != "cuda":
        raise KernelUnavailable(f"kernels.triton = 'on' needs a CUDA device (this run is on {device})")
    return "on"


def _attention(cfg: KernelsConfig, device: torch.device) -> tuple[str, int]:
    from diffusionlm.ops.attention import FA4_INSTALLED

    available = FA4_INSTALLED and is_hopper(device)
    if cfg.attention == "fa4" and not available:
        raise KernelUnavailable("kernels.attention = 'fa4' needs a Hopper GPU (compute capability 9.x) and the "
                                "flash-attn-4 package (pip install -e '.[fa4]')")
    if cfg.attention == "fa4":
        return "fa4", 0
    return ("fa4" if cfg.attention == "auto" and available else "sdpa"), cfg.fa4_min_scores


def _mlp(cfg: KernelsConfig, device: torch.device, triton: str) -> tuple[str, int]:
    from diffusionlm.ops.quack_mlp import quack_mlp_available

    if cfg.mlp == "pytorch":
        return "pytorch", cfg.quack_min_gate_up
    if cfg.mlp == "quack":
        if triton == "off" or not quack_mlp_available(device, warn=False):
            raise KernelUnavailable("kernels.mlp = 'quack' needs a Hopper GPU, kernels.triton on, and the pinned "
                                    "quack-kernels / nvidia-cutlass-dsl pair (pip install -e '.[fa4]')")
        return "quack", 0
    if triton == "off":
        if cfg.mlp == "triton":
            raise KernelUnavailable("kernels.mlp = 'triton' needs Triton kernels (kernels.triton is off here)")
        return "pytorch", cfg.quack_min_gate_up
    if cfg.mlp == "auto" and triton == "on" and quack_mlp_available(device, warn=True):
        return "quack", cfg.quack_min_gate_up
    return "triton", cfg.quack_min_gate_up


def _csrc(setting: str, device: torch.device) -> str:
    if setting == "off":
        return "off"
    from diffusionlm.ops import csrc

    csrc.load(setting)  # never raises: a missing library or toolchain leaves the fallback, said in csrc.status()
    return "on" if device.type in csrc.devices() else "off"


def resolve_kernels(cfg: KernelsConfig, device: torch.device | str) -> KernelPolicy:
    """The policy for a model on `device`; raises KernelUnavailable where a required kernel cannot run."""
    device = torch.device(device)
    triton = _triton(cfg.triton, device)
    attention, min_scores = _attention(cfg, device)
    mlp, min_gate_up = _mlp(cfg, device, triton)
    return KernelPolicy(triton, attention, mlp, min_scores, min_gate_up, _csrc(cfg.csrc, device))  # type: ignore[arg-type]
