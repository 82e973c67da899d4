"""`[kernels]`: which implementation of each fused operation runs, resolved once per run into a
`diffusionlm.ops.KernelPolicy` (the model receives it; the run's config, checkpoints and benchmark records
store the resolved choice)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.section import Section


class KernelsConfig(Section):
    triton: Literal["auto", "on", "off", "interpret"] = Field(
        "auto", description="Triton kernels for CUDA tensors (on: required; auto: when Triton is installed and "
        "the device is a GPU); never (off, the PyTorch fallbacks of identical semantics); or for CPU tensors too "
        "through Triton's interpreter (interpret, for testing kernels without a GPU)")
    attention: Literal["auto", "sdpa", "fa4"] = Field(
        "auto", description="training attention: SDPA everywhere, or on Hopper with flash-attn-4 installed "
        "cuDNN's forward and FlashAttention-4's backward (fa4: required, from any size; auto: where installed and "
        "at least fa4_min_scores scores per call)")
    mlp: Literal["auto", "triton", "quack", "pytorch"] = Field(
        "auto", description="training MLP: cuBLAS products with PyTorch element-wise SwiGLU (pytorch), with Triton "
        "SwiGLU kernels and on sm90+ the SwiGLU backward in a product's epilogue (triton), or on Hopper both "
        "SwiGLU passes in quack's product epilogues (quack: required, from any size; auto: where the pinned quack "
        "imports and at least quack_min_gate_up elements per call)")
    csrc: Literal["auto", "jit", "off"] = Field(
        "auto", description="the compiled csrc/ ops (diffusionlm::draw, ...) where the device has them: the library "
        "built by `just build-kernels` if it matches this torch and the sources (auto), built first if needed "
        "(jit), or never (off: their PyTorch fallbacks). Triton's kernels take precedence where they run")
    fa4_min_scores: int = Field(
        1 << 27, ge=0, description="attention takes FlashAttention-4's backward under `auto` from this many scores "
        "(B x H x T x T) per call: its Python-side launch costs more host time than cuDNN's, which small calls "
        "cannot hide (benchmarking/reports/2026-11-22-hopper-attention.md)")
    quack_min_gate_up: int = Field(
        150_000_000, ge=0, description="the MLP takes quack's products under `auto` from this many gate/up "
        "elements (rows x 2 x hidden) per call; below it the Triton path measured faster "
        "(benchmarking/reports/2026-11-22-hopper-mlp.md)")
    resolved: dict[str, str | int] = Field(
        default_factory=dict, description="what a run resolved the settings above to on its device (the kernel "
        "policy its model used), written by the trainer for the record; never read as input")
