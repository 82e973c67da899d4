"""The SwiGLU MLP on Hopper through quack's CuTe-DSL matrix products, whose epilogues do the SwiGLU work.

quack (the `quack-kernels` package, which FlashAttention-4 installs) has a gate/up product that applies
SwiGLU in its epilogue and writes both the product and the activation, and a down-projection input-gradient
product that applies the SwiGLU backward in its epilogue and recomputes the activation for the down weight's
gradient. So the activation's forward pass over the [M, 2 x hidden] product is never run as a kernel of its
own, and neither is its backward. At base's shape on an H100 (65,536 rows, 768 -> 2 x 2048 -> 768), the
forward took 0.65 ms against 0.86 ms for cuBLAS plus our SwiGLU kernel, the fused backward product 0.57 ms
against 0.64 ms for our Triton one, and the MLP forward and backward 3.17 ms against 3.43 ms (quack 0.6.5;
benchmarking/results/microbench_kernels_h100_2026-11-22.json, call 8A).

quack's gated epilogues pair gate and up as adjacent columns, so the gate/up weight goes in with its rows
interleaved (gate row i, then up row i): a copy of a 6 MB weight per step, differentiated by autograd like
any reshape. The model keeps its [gate; up] layout, so checkpoints do not change.

DIFFUSIONLM_MLP: "auto" (default) takes this path where it can run (see `quack_mlp_enabled`); "triton" never
does (the Triton path of `ops.swiglu_mlp`). Read when torch.compile traces, like DIFFUSIONLM_ATTENTION.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from typing import Any

import torch

from diffusionlm.ops.dispatch import is_hopper

_MODES = ("auto", "triton")

# Whether quack is installed, found without importing it (a heavy import, done on the first traced MLP).
QUACK_INSTALLED = importlib.util.find_spec("quack") is not None

# The path is taken from this many elements of the gate/up product per call (rows x 2 x hidden). Measured
# training steps on H100s (benchmarking/results/bench_train_h100_2026-11-22i.json): base (65,536 x 4,096,
# 268M) 655k tokens/s against 641k for the Triton path in the same call; medium (65,536 x 2,816, 185M)
# 2.16M against 2.06M (session 7, another H100); small (65,536 x 2,048, 134M) 3.37M against 3.64M (session 7,
# another H100), so small keeps the Triton path.
QUACK_MIN_GATE_UP = 150_000_000


def _accept_dsl_internals_in_cache_keys() -> None:
    """quack fingerprints everything its epilogue functions reach, to key its cache of compiled kernels,
    and refuses values it has no rule for. With nvidia-cutlass-dsl 4.8 that walk reaches the DSL's own
    plumbing (a ContextVar, IR-state tables, a logger, an itertools counter, ...), which quack 0.6.4-0.6.5
    refuse when their epilogue library is imported. Such a value gets a key by identity instead: two
    different objects never share a key, so a cached kernel is never reused for other math (at worst a
    recompile in a new process: about 2 s at base's shape). Every value quack has a rule for keeps it."""
    try:
        from quack.gemm_runtime import identity
    except ImportError:  # a quack without this fingerprinting has nothing to accept
        return
    original = identity.semantic_value_key
    if getattr(original, "_diffusionlm_keys_by_identity", False):
        return

    def semantic_value_key(value: Any, seen: Any) -> Any:
        try:
            return original(value, seen)
        except TypeError:
            return ("identity", type(value).__module__, type(value).__qualname__, id(value))

    semantic_value_key._diffusionlm_keys_by_identity = True  # type: ignore[attr-defined]
    identity.semantic_value_key = semantic_value_key


@functools.cache
def quack_mlp_importable() -> bool:
    """Whether quack's gated products import here (once per process; a failure warns and falls back)."""
    try:
        _accept_dsl_internals_in_cache_keys()
        import quack.epilogue.library  # noqa: F401 - builds the gated epilogues, where a refusal would come
        from quack.gemm_interface import gemm_dgated, gemm_gated  # noqa: F401
    except Exception as e:  # any failure means the Triton path, said once
        warnings.warn(f"quack is installed but its gated products do not import ({type(e).__name__}: {e}); "
                      "the MLP takes the Triton path", stacklevel=2)
        return False
    return True


@torch.compiler.assume_constant_result
def _quack_importable() -> bool:
    return quack_mlp_importable()


def quack_mlp_available(device: torch.device) -> bool:
    """Whether an MLP on `device` can take quack's products: the setting, the GPU (compute capability 9.x,
    where it was measured) and the package."""
    mode = os.environ.get("DIFFUSIONLM_MLP", "auto")
    if mode not in _MODES:
        raise ValueError(f"DIFFUSIONLM_MLP={mode!r}: expected one of {', '.join(_MODES)}")
    if mode == "triton" or device.type != "cuda" or not QUACK_INSTALLED or not is_hopper(device):
        return False
    return _quack_importable()


def quack_mlp_enabled(x: torch.Tensor, hidden: int) -> bool:
    """Whether a training MLP over `x` [M, d] (already in the compute dtype) with `hidden` units runs here:
    grads wanted, and `quack_mlp_pays` for its shape."""
    if not (torch.is_grad_enabled() and quack_mlp_pays(x.shape[0], x.shape[-1], hidden, x.dtype)):
        return False
    return quack_mlp_available(x.device)


def quack_mlp_pays(rows: int, d_model: int, hidden: int, dtype: torch.dtype) -> bool:
    """Whether quack's products run, and pay, for an MLP of these sizes: bf16 or fp16, rows of 16-byte
    multiples (their TMA loads), and at least QUACK_MIN_GATE_UP elements in the gate/up product."""
    supported = dtype in (torch.bfloat16, torch.float16) and d_model % 8 == 0 and hidden % 8 == 0
    return supported and rows * 2 * hidden >= QUACK_MIN_GATE_UP


def interleave_gate_up(weight: torch.Tensor) -> torch.Tensor:
    """[gate; up] rows -> gate row 0, up row 0, gate row 1, ...: the pairing of quack's gated epilogues."""
    hidden = weight.shape[0] // 2
    return weight.view(2, hidden, -1).transpose(0, 1).reshape(weight.shape)


def swiglu_mlp_quack(x: torch.Tensor, gate_up_weight: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """down(silu(gate) * up) for x [M, d] and weights in the compute dtype, through quack's products."""
    return torch.ops.diffusionlm.swiglu_mlp_quack(x, interleave_gate_up(gate_up_weight), down_weight)[0]


@torch.library.custom_op("diffusionlm::swiglu_mlp_quack", mutates_args=())
def _mlp_op(x: torch.Tensor, gate_up_interleaved: torch.Tensor, down_weight: torch.Tensor,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    from quack.gemm_interface import gemm_gated

    gate_up, hidden = gemm_gated(x, gate_up_interleaved.t(), activation="swiglu")
    return hidden @ down_weight.t(), gate_up  # gate_up: interleaved, kept for the backward


@_mlp_op.register_fake
def _(x: torch.Tensor, gate_up_interleaved: torch.Tensor, down_weight: torch.Tensor,
      ) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape[0], down_weight.shape[0]), x.new_empty(x.shape[0], gate_up_interleaved.shape[0])


@torch.library.custom_op("diffusionlm::swiglu_mlp_quack_backward", mutates_args=())
def _mlp_backward_op(grad_y: torch.Tensor, x: torch.Tensor, gate_up_interleaved: torch.Tensor,
                     down_weight: torch.Tensor, gate_up: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from quack.gemm_interface import gemm_dgated

    grad_gate_up, hidden = gemm_dgated(grad_y, down_weight, gate_up, activation="swiglu")
    return grad_gate_up @ gate_up_interleaved, grad_gate_up.t() @ x, grad_y.t() @ hidden


@_mlp_backward_op.register_fake
def _(grad_y: torch.Tensor, x: torch.Tensor, gate_up_interleaved: torch.Tensor, down_weight: torch.Tensor,
      gate_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(gate_up_interleaved), torch.empty_like(down_weight)


def _setup(ctx: Any, inputs: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    ctx.save_for_backward(*inputs, output[1])


def _backward(ctx: Any, grad_y: torch.Tensor, _grad_gate_up: Any) -> tuple[torch.Tensor, ...]:
    x, gate_up_interleaved, down_weight, gate_up = ctx.saved_tensors
    return torch.ops.diffusionlm.swiglu_mlp_quack_backward(grad_y.contiguous(), x, gate_up_interleaved,
                                                           down_weight, gate_up)


_mlp_op.register_autograd(_backward, setup_context=_setup)
