"""Attention over [B, T, H, D] tensors: the SDPA path against the formula, the FlashAttention-4 dispatch, and
(on a Hopper GPU with flash-attn-4) cuDNN forward + FlashAttention-4 backward against SDPA."""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys

import pytest
import torch

import diffusionlm.ops as ops

# the module, not the function of the same name that diffusionlm.ops exports
attention_module = importlib.import_module("diffusionlm.ops.attention")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def attention_by_formula(q, k, v, allowed):
    """softmax(q k^T / sqrt(D)) v per head in float64; allowed: bool [B, 1 or H, T, T] or None."""
    q, k, v = (x.double().transpose(1, 2) for x in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


def qkv_views(B=2, T=12, H=3, D=8, seed=0):
    """q, k, v as the model hands them over: strided [B, T, H, D] views of one projection."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, 3, H, D, generator=g)
    return qkv.unbind(2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_path_matches_the_formula(causal, padded):
    q, k, v = qkv_views()
    B, T = q.shape[:2]
    real = torch.ones(B, T, dtype=torch.bool)
    if padded:
        real[0, -4:] = False  # the first sequence ends in 4 padding positions
    key_mask = real[:, None, None, :] if padded else None
    allowed = None
    if causal or padded:
        allowed = torch.ones(B, 1, T, T, dtype=torch.bool)
        if causal:
            allowed &= torch.ones(T, T, dtype=torch.bool).tril()
        if padded:
            allowed &= key_mask
    y = ops.attention(q, k, v, causal=causal, key_mask=key_mask)
    assert y.shape == q.shape
    torch.testing.assert_close(y.double(), attention_by_formula(q, k, v, allowed), atol=1e-5, rtol=1e-5)


def test_the_dispatch_traces_into_one_graph():
    """The path is chosen while torch.compile traces: a lookup it cannot trace would split every layer's graph.
    An fa4 policy makes it trace every check (fp32 queries then take SDPA)."""
    q, k, v = (x.requires_grad_() for x in (t.clone() for t in qkv_views()))
    for kernels in (ops.PYTORCH, ops.KernelPolicy(attention="fa4", fa4_min_scores=0)):
        y = torch.compile(ops.attention, fullgraph=True, backend="eager")(q, k, v, causal=True, kernels=kernels)
        torch.testing.assert_close(y, ops.attention(q, k, v, causal=True))


def test_padding_keys_change_nothing_they_should_not():
    q, k, v = qkv_views()
    key_mask = torch.ones(2, 1, 1, 12, dtype=torch.bool)
    key_mask[:, ..., -3:] = False
    y = ops.attention(q, k, v, key_mask=key_mask)
    k2, v2 = k.clone(), v.clone()
    k2[:, -3:], v2[:, -3:] = 100.0, -100.0  # whatever sits at padding keys is never attended to
    torch.testing.assert_close(ops.attention(q, k2, v2, key_mask=key_mask), y)


def test_fa4_path_is_taken_only_where_the_policy_asks_for_it_and_it_pays():
    """Per call, FA4's backward needs the fa4 policy, gradients, no padding mask, bf16/fp16, and at least the
    policy's fa4_min_scores scores (B x H x T x T: 2 x 4 x 256 x 256 = 2^19 here)."""
    q = torch.zeros(2, 256, 4, 64, dtype=torch.bfloat16, requires_grad=True)
    fa4 = ops.KernelPolicy(attention="fa4", fa4_min_scores=1 << 19)
    assert not ops.fa4_backward_enabled(q, None, ops.PYTORCH), "the default policy takes SDPA"
    assert not ops.fa4_backward_enabled(q, None, ops.KernelPolicy(triton="on", fa4_min_scores=0))
    assert ops.fa4_backward_enabled(q, None, fa4), "exactly at the threshold"
    assert not ops.fa4_backward_enabled(q, None, dataclasses.replace(fa4, fa4_min_scores=(1 << 19) + 1))
    assert not ops.fa4_backward_enabled(q, torch.ones(2, 1, 1, 256, dtype=torch.bool), fa4), "padding: SDPA"
    assert not ops.fa4_backward_enabled(q.detach(), None, fa4), "no gradient wanted"
    with torch.no_grad():
        assert not ops.fa4_backward_enabled(q, None, fa4)
    assert not ops.fa4_backward_enabled(q.float(), None, fa4), "FA4 takes bf16/fp16 only"


def test_fa4_backward_is_chosen_only_where_it_pays():
    bf16, min_scores = torch.bfloat16, ops.KernelPolicy().fa4_min_scores  # the default: 2^27
    assert ops.fa4_backward_pays((64, 1024, 12, 64), bf16, min_scores), "base: 805M scores per call"
    assert ops.fa4_backward_pays((256, 256, 8, 64), bf16, min_scores), "medium: 2^27 scores per call"
    assert not ops.fa4_backward_pays((256, 256, 6, 64), bf16, min_scores), "small: 101M scores, host-bound with FA4"
    assert ops.fa4_backward_pays((256, 256, 6, 64), bf16, 0), "a threshold of 0: every supported call"
    assert not ops.fa4_backward_pays((64, 1024, 12, 64), torch.float32, 0), "FA4 takes bf16/fp16 only"
    assert not ops.fa4_backward_pays((64, 1024, 12, 60), bf16, 0), "head size must be a multiple of 8"
    assert not ops.fa4_backward_pays((64, 1024, 2, 512), bf16, 0), "head size at most 256"


def test_training_attention_path_names_what_runs():
    bf16, base = torch.bfloat16, (64, 1024, 12, 64)
    assert ops.training_attention_path(ops.PYTORCH, base, bf16) == "sdpa"
    assert ops.training_attention_path(ops.KernelPolicy(attention="fa4"), (256, 256, 6, 64), bf16) == "sdpa"
    path = ops.training_attention_path(ops.KernelPolicy(attention="fa4"), base, bf16)
    assert path.startswith("cudnn forward, flash-attn-4") and path.endswith(" backward")


def test_fa4_is_found_only_where_its_cute_kernels_are(tmp_path, monkeypatch):
    """FlashAttention-2 installs a `flash_attn` package too; only one with `cute/interface.py` is FA4."""
    package = tmp_path / "flash_attn"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "flash_attn", raising=False)
    assert not attention_module.fa4_installed()
    (package / "cute").mkdir()
    (package / "cute" / "interface.py").write_text("")
    assert attention_module.fa4_installed()


def _hopper_with_fa4() -> bool:
    return (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
            and attention_module.FA4_INSTALLED)


# what `kernels.attention = "fa4"` resolves to on a Hopper GPU: FA4's backward from any size (this test's small
# shapes take the path too), with Triton on for rotary_attention's in-place rotation back
FA4 = ops.KernelPolicy(triton="on", attention="fa4", fa4_min_scores=0)


def _assert_fa4_path_matches_sdpa(qkv, grad, forward):
    """forward(kernels): attention's output from `qkv` under a policy; run with the all-PyTorch policy (SDPA),
    then with FA4's: same output and the same gradient of `qkv`."""
    results = []
    for kernels in (ops.PYTORCH, FA4):
        torch._dynamo.reset()  # each policy traces its own graph
        qkv.grad = None
        y = forward(kernels)
        y.backward(grad)
        results.append((y.detach().float(), qkv.grad.float()))
    (y_ref, grad_ref), (y, grad_fa4) = results
    torch.testing.assert_close(y, y_ref, atol=2e-2, rtol=0)
    torch.testing.assert_close(grad_fa4, grad_ref, atol=3e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
def test_cudnn_forward_fa4_backward_matches_sdpa(causal, compiled):
    if not _hopper_with_fa4():
        pytest.skip("needs a Hopper GPU and flash-attn-4")
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(4, 256, 3, 4, 64, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    grad = torch.randn(4, 256, 4, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    small = torch.zeros(2, 256, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    default_fa4 = ops.KernelPolicy(triton="on", attention="fa4")  # `auto` on Hopper: the default threshold
    assert not ops.fa4_backward_enabled(small, None, default_fa4), "too little work per call to pay for FA4's launch"
    fn = torch.compile(ops.attention, fullgraph=True) if compiled else ops.attention

    def forward(kernels):
        q, k, v = qkv.unbind(2)
        assert ops.fa4_backward_enabled(q, None, kernels) == (kernels is FA4)
        return fn(q, k, v, causal=causal, kernels=kernels)

    _assert_fa4_path_matches_sdpa(qkv, grad, forward)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_rotary_attention_fa4_backward_writes_the_projection_gradient(causal):
    """FlashAttention-4 writes dq, dk, dv into the projection's gradient and q, k are rotated back in place:
    the same gradient as rotary embedding then SDPA through autograd."""
    if not _hopper_with_fa4():
        pytest.skip("needs a Hopper GPU and flash-attn-4")
    g = torch.Generator(device="cuda").manual_seed(1)
    B, T, H, D = 4, 256, 4, 64
    qkv = torch.randn(B, T, 3, H, D, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    angles = torch.outer(torch.arange(T, device="cuda", dtype=torch.float32), torch.rand(D // 2, device="cuda"))
    cos, sin = angles.cos()[:, None].bfloat16(), angles.sin()[:, None].bfloat16()
    grad = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    fn = torch.compile(ops.rotary_attention, fullgraph=True)
    _assert_fa4_path_matches_sdpa(qkv, grad, lambda kernels: fn(qkv, cos, sin, causal=causal, kernels=kernels))


@pytest.mark.parametrize("padded", [False, True])
def test_structured_attn_mask_matches_the_formula_and_combines_with_padding(padded):
    q, k, v = qkv_views()
    B, T = q.shape[:2]
    g = torch.Generator().manual_seed(1)
    attn_mask = torch.rand(T, T, generator=g) < 0.5
    attn_mask |= torch.eye(T, dtype=torch.bool)  # every query keeps a key
    real = torch.ones(B, T, dtype=torch.bool)
    if padded:
        real[0, -4:] = False
        attn_mask[:, :2] = True  # every query keeps a real key, padding included
    key_mask = real[:, None, None, :] if padded else None
    allowed = attn_mask.expand(B, 1, T, T) & real[:, None, None, :]
    y = ops.attention(q, k, v, key_mask=key_mask, attn_mask=attn_mask)
    torch.testing.assert_close(y.double(), attention_by_formula(q, k, v, allowed), atol=1e-5, rtol=1e-5)
    # rotary_attention hands the mask through
    qkv = torch.stack([q, k, v], dim=2)
    cos, sin = torch.ones(T, 1, q.shape[-1] // 2), torch.zeros(T, 1, q.shape[-1] // 2)  # the identity rotation
    torch.testing.assert_close(ops.rotary_attention(qkv, cos, sin, key_mask=key_mask, attn_mask=attn_mask), y)
