"""The residual add + RMSNorm op: the Triton backward against the PyTorch composition."""

from __future__ import annotations

import pytest
import torch

import diffusionlm.ops as ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EPS = 1e-5


def _inputs(dtype, seed=0, d=48):
    # 21 rows: not a multiple of the kernel's row block; d = 48: the column block has a masked tail
    gen = torch.Generator().manual_seed(seed)
    x, branch = torch.randn(3, 7, d, generator=gen), torch.randn(3, 7, d, generator=gen)
    weight = 1.0 + 0.2 * torch.randn(d, generator=gen)  # fp32, as the model's parameter
    grad_y, grad_out = torch.randn(3, 7, d, generator=gen), torch.randn(3, 7, d, generator=gen)
    return [t.to(DEVICE, dtype) for t in (x, branch)] + [weight.to(DEVICE)] + \
        [t.to(DEVICE, dtype) for t in (grad_y, grad_out)]


def _run(fn, x, branch, weight, grad_y, grad_out):
    leaves = [t.clone().requires_grad_() for t in (x, branch, weight)]
    y, out = fn(*leaves, EPS)
    torch.autograd.backward([y, out] if grad_y is not None else [out],
                            [grad_y, grad_out] if grad_y is not None else [grad_out])
    return [y, out] + [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_rms_norm_matches_reference(dtype):
    inputs = _inputs(dtype)
    ours, ref = _run(ops.add_rms_norm, *inputs), _run(ops.add_rms_norm_reference, *inputs)
    exact = _run(ops.add_rms_norm_reference, *[t.double() for t in inputs])
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1]), "the forward is F.rms_norm's formula"
    for o, r, e in zip(ours[2:], ref[2:], exact[2:]):
        assert o.dtype == r.dtype
        scale = e.abs().max().item()
        bound = 1e-6 * scale if dtype == torch.float32 else 2 * (r.double() - e).abs().max().item() + 1e-3 * scale
        assert (o.double() - e).abs().max().item() <= bound


def test_add_rms_norm_uses_the_kernel_only_for_one_dtype():
    x, branch, weight, _, _ = _inputs(torch.float32)
    y, _ = ops.add_rms_norm(x, branch.requires_grad_(), weight, EPS)
    assert "AddRMSNorm" in type(y.grad_fn).__name__
    # an fp32 stream plus a bf16 branch stays on the compiled path (its casts fuse there)
    y, _ = ops.add_rms_norm(x, branch.detach().bfloat16().requires_grad_(), weight, EPS)
    assert "AddRMSNorm" not in type(y.grad_fn).__name__


def test_add_rms_norm_with_only_the_norm_used_downstream():
    x, branch, weight, _, grad_out = _inputs(torch.float32, seed=1)
    ours = _run(ops.add_rms_norm, x, branch, weight, None, grad_out)
    ref = _run(ops.add_rms_norm_reference, x, branch, weight, None, grad_out)
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-6)


def test_add_rms_norm_under_torch_compile_matches_eager():
    inputs = _inputs(torch.float32, seed=2)
    eager = _run(ops.add_rms_norm, *inputs)
    compiled = _run(torch.compile(ops.add_rms_norm, fullgraph=True), *inputs)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
