"""Shapes, masking invariants and precision behaviour of the DiffusionTransformer."""

from __future__ import annotations

import pytest
import torch

from config import load_config
from diffusionlm.models import DiffusionTransformer, default_ffn_hidden


def tiny_cfg(*extra: str):
    return load_config(None, ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.vocab_size=97",
                              "tokenizer.vocab_size=97", "model.context_length=32", "inference.total_length=32",
                              *extra]).model


def test_forward_shapes_and_mask_logit_is_minus_inf() -> None:
    torch.manual_seed(0)
    model = DiffusionTransformer(tiny_cfg())
    x = torch.randint(5, 97, (3, 16))
    logits = model(x)
    assert logits.shape == (3, 16, 97)
    assert torch.isneginf(logits[..., 3]).all()
    assert torch.isfinite(logits[..., :3]).all() and torch.isfinite(logits[..., 4:]).all()
    # the mask token can never win a sample
    probs = torch.softmax(logits, -1)
    assert (probs[..., 3] == 0).all()


def test_output_mask_selects_rows_in_order() -> None:
    torch.manual_seed(0)
    model = DiffusionTransformer(tiny_cfg()).eval()
    x = torch.randint(5, 97, (2, 16))
    sel = torch.rand(2, 16) < 0.4
    full = model(x)
    part = model(x, output_mask=sel)
    assert part.shape == (int(sel.sum()), 97)
    torch.testing.assert_close(part, full[sel])


def reference_attention(attn: torch.nn.Module, x: torch.Tensor, theta: float) -> torch.Tensor:
    """Attention with RoPE written from its definition: each (2i, 2i + D/2) pair of a head's query and key
    is rotated by the angle pos * theta^(-2i/D), then plain softmax(q k^T / sqrt(D)) v over all keys."""
    B, T, d = x.shape
    H = attn.n_heads
    D = d // H
    q, k, v = attn.qkv(x).split(d, dim=-1)
    q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    angle = torch.arange(T)[:, None] * theta ** (-torch.arange(0, D, 2) / D)[None]  # [T, D/2]
    rot = torch.zeros(T, D, D)
    half = D // 2
    for i in range(half):
        c, s = torch.cos(angle[:, i]), torch.sin(angle[:, i])
        rot[:, i, i], rot[:, i, i + half] = c, -s
        rot[:, i + half, i], rot[:, i + half, i + half] = s, c
    q, k = (torch.einsum("tij,bhtj->bhti", rot, t) for t in (q, k))
    weights = torch.softmax(q @ k.transpose(-1, -2) / D**0.5, dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(B, T, d))


def test_attention_matches_its_definition() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    attn = DiffusionTransformer(cfg).blocks[0].attn
    x = torch.randn(2, 16, cfg.d_model)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, None), reference_attention(attn, x, cfg.rope_theta),
                                   atol=1e-5, rtol=1e-4)


def test_bidirectional_and_causal_information_flow() -> None:
    torch.manual_seed(0)
    x = torch.randint(5, 97, (1, 16))
    x2 = x.clone()
    x2[0, -1] = 6 if x[0, -1] != 6 else 7
    bi = DiffusionTransformer(tiny_cfg()).eval()
    assert not torch.allclose(bi(x)[0, 0], bi(x2)[0, 0]), "the first position must see the last token"
    causal = DiffusionTransformer(tiny_cfg("model.causal=true")).eval()
    torch.testing.assert_close(causal(x)[0, :-1], causal(x2)[0, :-1])


def test_padding_keys_do_not_influence_real_positions() -> None:
    torch.manual_seed(0)
    model = DiffusionTransformer(tiny_cfg()).eval()
    x = torch.randint(5, 97, (1, 16))
    attn = torch.ones(1, 16, dtype=torch.bool)
    attn[0, 10:] = False
    y = x.clone()
    y[0, 10:] = torch.randint(5, 97, (6,))  # different garbage behind the padding mask
    torch.testing.assert_close(model(x, attention_mask=attn)[0, :10], model(y, attention_mask=attn)[0, :10])


def test_adaln_needs_time_and_depends_on_it() -> None:
    torch.manual_seed(0)
    model = DiffusionTransformer(tiny_cfg("model.time_conditioning='adaln'")).eval()
    x = torch.randint(5, 97, (2, 8))
    with pytest.raises(ValueError, match="needs the diffusion time"):
        model(x)
    # gates start at zero: the conditioned network starts equal to the unconditioned one
    torch.testing.assert_close(model(x, t=torch.tensor([0.1, 0.9])), model(x, t=torch.tensor([0.5, 0.5])))
    for block in model.blocks:
        torch.nn.init.normal_(block.adaln.weight, std=0.1)
    assert not torch.allclose(model(x, t=torch.tensor([0.1, 0.9])), model(x, t=torch.tensor([0.5, 0.5])))


def test_tied_head_and_param_counts() -> None:
    cfg = tiny_cfg()
    model = DiffusionTransformer(cfg)
    assert model.head.weight is model.embed.weight
    assert model.num_params() - model.num_params(include_embeddings=False) == 97 * 64
    untied = DiffusionTransformer(tiny_cfg("model.tie_embeddings=false"))
    assert untied.num_params() == model.num_params() + 97 * 64
    assert default_ffn_hidden(384) == 1024


def test_residual_projections_are_scaled_down() -> None:
    torch.manual_seed(0)
    model = DiffusionTransformer(tiny_cfg("model.n_layers=8"))
    proj_std = model.blocks[0].attn.proj.weight.std().item()
    qkv_std = model.blocks[0].attn.qkv.weight.std().item()
    assert proj_std < qkv_std / 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_backward_is_finite(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = DiffusionTransformer(tiny_cfg())
    x = torch.randint(5, 97, (2, 16))
    with torch.autocast("cpu", dtype=dtype):
        logits = model(x, output_mask=torch.ones(2, 16, dtype=torch.bool))
        loss = torch.nn.functional.cross_entropy(logits.float(), x.flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("residual_in_fp32", [True, False])
def test_residual_stream_dtype_under_autocast(residual_in_fp32: bool) -> None:
    torch.manual_seed(0)
    model = DiffusionTransformer(tiny_cfg(f"model.residual_in_fp32={str(residual_in_fp32).lower()}"))
    seen: list[torch.dtype] = []
    for block in model.blocks:
        block.register_forward_hook(lambda _m, _args, out: seen.append(out.dtype))
    x = torch.randint(5, 97, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    want = torch.float32 if residual_in_fp32 else torch.bfloat16
    assert seen == [want, want]
    torch.manual_seed(0)
    reference = DiffusionTransformer(tiny_cfg())  # fp32 residual, same weights
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(x)
    # the same function: only rounding of the residual stream differs
    torch.testing.assert_close(logits.float(), expected.float(), atol=0.05, rtol=0.05)
    model(x).float().sum().backward()  # outside autocast the stream stays fp32 whatever the setting
    assert seen[-1] == torch.float32



def test_rms_norm_is_fp32_math_rounded_once() -> None:
    from diffusionlm.models.transformer import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(64, eps=1e-5)
    torch.nn.init.normal_(norm.weight)
    x = (torch.randn(8, 64) * 3).bfloat16()
    weight = norm.weight.detach().bfloat16().float()  # the weight follows the input's dtype
    expected = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5) * weight
    out = norm(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected.bfloat16(), atol=0, rtol=0)


def test_attn_mask_and_position_ids_default_to_the_plain_forward() -> None:
    torch.manual_seed(0)
    model = DiffusionTransformer(tiny_cfg()).eval()
    x = torch.randint(5, 97, (2, 16))
    full = torch.ones(16, 16, dtype=torch.bool)
    torch.testing.assert_close(model(x, attn_mask=full, position_ids=torch.arange(16)), model(x))


def test_two_copies_at_the_same_positions_behind_a_block_diagonal_mask_match_one() -> None:
    # two halves of one input, each attending only to itself, both at positions 0..T-1: each half's logits are
    # those of a forward on that half alone (the input may exceed context_length when positions are given)
    torch.manual_seed(0)
    model = DiffusionTransformer(tiny_cfg()).eval()
    a, b = torch.randint(5, 97, (2, 1, 32))
    real = torch.ones(1, 32, dtype=torch.bool)
    real[0, -3:] = False  # with padding, folded into the structured mask
    halves = torch.zeros(64, 64, dtype=torch.bool)
    halves[:32, :32] = halves[32:, 32:] = True
    both = model(torch.cat([a, b], dim=1), attention_mask=torch.cat([real, real], dim=1), attn_mask=halves,
                 position_ids=torch.arange(32).repeat(2))
    torch.testing.assert_close(both[:, :32][real], model(a, attention_mask=real)[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[:, 32:][real], model(b, attention_mask=real)[real], atol=1e-5, rtol=1e-5)
