"""The transformer family: a bidirectional (or, with `causal`, autoregressive) transformer over token ids.

Read top to bottom: rotary embeddings, attention, SwiGLU MLP, optional adaLN timestep conditioning, the
block, then the model. It knows nothing of objectives, data or distributed training: it maps token ids
(some of them `<mask>`) to logits over the vocabulary. Which kernels its ops run is the `KernelPolicy`
it is built with (the PyTorch paths by default).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from config.model import TransformerConfig
from diffusionlm.ops import PYTORCH, KernelPolicy, rotary_attention, swiglu_mlp


def default_ffn_hidden(d_model: int) -> int:
    # SwiGLU with ~8/3 d keeps the parameter count of a 4d GELU MLP; round up to 64 for matmul shapes.
    return math.ceil(8 * d_model / 3 / 64) * 64


class RMSNorm(nn.RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The weight follows the input's dtype: a bf16 residual stream (residual_in_fp32 = false) keeps the
        # fused kernel, which needs matching dtypes and accumulates in fp32 either way.
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


class Rotary(nn.Module):
    """Rotary position embedding's angles, rotate-half layout (contiguous halves, no strided gathers); the
    rotation itself is `ops.rotary_attention`'s first step."""

    def __init__(self, head_dim: int, max_len: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        # [T, 1, D/2]: broadcast over heads of a [B, T, H, D] input. Non-persistent: a pure function of the
        # config, not learned state.
        self.register_buffer("cos", freqs.cos()[:, None], persistent=False)
        self.register_buffer("sin", freqs.sin()[:, None], persistent=False)

    def angles(self, length: int, dtype: torch.dtype, position_ids: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of the first `length` positions, or of `position_ids` (int64 [T]) when given, [T, 1, D/2]
        in `dtype`. Given positions let one input hold several sequences that share positions 0..L-1."""
        if position_ids is None:
            return self.cos[:length].to(dtype), self.sin[:length].to(dtype)
        return self.cos[position_ids].to(dtype), self.sin[position_ids].to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, kernels: KernelPolicy):
        super().__init__()
        self.kernels = kernels
        self.n_heads = cfg.n_heads
        self.causal = cfg.causal
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.rotary = Rotary(cfg.d_model // cfg.n_heads, cfg.context_length, cfg.rope_theta)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, attn_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads)
        # key_mask [B, 1, 1, T]: queries may not attend to padding keys. None when packing.
        # attn_mask: bool [T, T] (or [B, 1, T, T] with padding folded in), True = may attend; None: full.
        y = rotary_attention(qkv, *self.rotary.angles(T, qkv.dtype, position_ids), causal=self.causal,
                             key_mask=key_mask, kernels=self.kernels, attn_mask=attn_mask)
        return self.proj(y.reshape(B, T, D))  # y: [B, T, H, D], no layout copies on the way


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int, kernels: KernelPolicy):
        super().__init__()
        self.kernels = kernels
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # down(silu(gate) * up); on GPUs the element-wise work is a kernel each way, fused into a product
        return swiglu_mlp(x, self.gate_up.weight, self.down.weight, self.kernels)


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of the diffusion time t in [0, 1], then a small MLP."""

    def __init__(self, dim: int, n_freqs: int = 128):
        super().__init__()
        self.n_freqs = n_freqs
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # t: [B]
        freqs = torch.exp(-math.log(10000.0) * torch.arange(self.n_freqs, device=t.device) / self.n_freqs)
        angles = 1000.0 * t.float()[:, None] * freqs[None]
        # features follow the weights' dtype, so a model cast to bf16 for sampling works without autocast
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1).to(self.mlp[0].weight.dtype))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, kernels: KernelPolicy):
        super().__init__()
        d = cfg.d_model
        self.attn_norm = RMSNorm(d, eps=cfg.norm_eps)
        self.attn = Attention(cfg, kernels)
        self.mlp_norm = RMSNorm(d, eps=cfg.norm_eps)
        self.mlp = SwiGLU(d, cfg.ffn_hidden or default_ffn_hidden(d), kernels)
        # adaLN: the timestep embedding shifts/scales both norms and gates both residual branches.
        self.adaln = nn.Linear(d, 6 * d) if cfg.time_conditioning == "adaln" else None

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, cond: torch.Tensor | None,
                attn_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.adaln is None:
            x = x + self.attn(self.attn_norm(x), key_mask, attn_mask, position_ids)
            return x + self.mlp(self.mlp_norm(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(F.silu(cond))[:, None].chunk(6, dim=-1)
        x = x + gate1 * self.attn(self.attn_norm(x) * (1 + scale1) + shift1, key_mask, attn_mask, position_ids)
        return x + gate2 * self.mlp(self.mlp_norm(x) * (1 + scale2) + shift2)


class DiffusionTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig, kernels: KernelPolicy = PYTORCH):
        super().__init__()
        self.cfg, self.kernels = cfg, kernels
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.time_embed = TimestepEmbedding(cfg.d_model) if cfg.time_conditioning == "adaln" else None
        self.blocks = nn.ModuleList(Block(cfg, kernels) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.register_buffer("mask_index", torch.tensor([cfg.mask_token_id]), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
        # Residual projections are scaled so the residual stream's variance does not grow with depth.
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, std=std / math.sqrt(2 * self.cfg.n_layers))
            nn.init.normal_(block.mlp.down.weight, std=std / math.sqrt(2 * self.cfg.n_layers))
            if block.adaln is not None:  # start as the unconditioned network (gates at zero)
                nn.init.zeros_(block.adaln.weight)
                nn.init.zeros_(block.adaln.bias)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameters; without embeddings, less the token embedding and an untied output head."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once
        if not include_embeddings:
            n -= self.embed.weight.numel()
            if self.head.weight is not self.embed.weight:
                n -= self.head.weight.numel()
        return n

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        output_mask: torch.Tensor | None = None,
        output_index: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for `input_ids` [B, T].

        attention_mask: bool [B, T], False at padding (those keys are never attended to).
        t: diffusion time [B], required with adaLN conditioning, ignored otherwise.
        output_mask: bool [B, T]; when given, only those positions go through the head and the result is
        [N, V] in row-major order of the True entries: the loss needs logits at masked positions only.
        output_index: int64 [N] flat positions into B*T, the same selection as `output_mask` given as
        `output_mask.flatten().nonzero()`; unlike a bool mask it keeps torch.compile graphs whole.
        attn_mask: bool [T, T] shared by the batch, True where query i may attend key j (combined with
        `attention_mask` and `causal`); None: every query sees every (real) key. A structured mask takes SDPA
        with a dense boolean mask on every device.
        position_ids: int64 [T], the rotary position of each input position (default 0..T-1), each below
        `context_length`; lets one input hold two views of a sequence at the same positions.
        The `<mask>` logit is always -inf so it can never be predicted or sampled.
        """
        x = self.embed(input_ids)
        if not self.cfg.residual_in_fp32 and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))  # the blocks keep whatever dtype they are given
        key_mask = attention_mask[:, None, None, :] if attention_mask is not None else None
        if attn_mask is not None and key_mask is not None:
            # fold the padding into the structured mask once here, not in every layer: [B, 1, T, T]
            attn_mask, key_mask = attn_mask & key_mask, None
        cond = None
        if self.time_embed is not None:
            if t is None:
                raise ValueError("time_conditioning='adaln' needs the diffusion time t")
            cond = self.time_embed(t).to(x.dtype)
        for block in self.blocks:
            x = block(x, key_mask, cond, attn_mask, position_ids)
        x = self.norm(x)
        if output_mask is not None:
            x = x[output_mask]
        elif output_index is not None:
            x = x.flatten(0, 1).index_select(0, output_index)
        logits = self.head(x)
        return logits.index_fill(-1, self.mask_index, float("-inf"))
