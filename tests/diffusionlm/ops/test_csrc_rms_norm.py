"""The compiled diffusionlm::rms_norm (csrc/rms_norm_cpu.cpp) against its float64 definition and the PyTorch
fallback, and both compiled ops under torch.library.opcheck and torch.compile(fullgraph=True)."""

from __future__ import annotations

import pytest
import torch

from diffusionlm.ops import csrc

EPS = 1e-6


def _inputs(width: int, dtype: torch.dtype, weight_dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed + width)
    x = (torch.randn(3, 5, width, generator=g) * 2).to(dtype)
    weight = (1 + torch.randn(width, generator=g) / 4).to(weight_dtype)
    residual = torch.randn(3, 5, width, generator=g).to(dtype)
    return x, weight, residual


def _definition(x, weight, residual):
    """float64 RMSNorm of h = x (+ residual, rounded to x's dtype as the op defines it)."""
    h = x if residual is None else (x.double() + residual.double()).to(x.dtype)
    h = h.double()
    return h * torch.rsqrt(h.square().mean(-1, keepdim=True) + EPS) * weight.double()


# float32: accumulation order only; bfloat16: the output's own rounding (2^-8 relative)
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.bfloat16: {"rtol": 8e-3, "atol": 1e-2}}


@pytest.mark.parametrize("width", [1, 7, 4097])
@pytest.mark.parametrize("dtype,weight_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                (torch.bfloat16, torch.float32)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_matches_definition(compiled, width, dtype, weight_dtype, with_residual):
    x, weight, residual = _inputs(width, dtype, weight_dtype)
    residual = residual if with_residual else None
    torch.use_deterministic_algorithms(True)  # uninitialised outputs are NaN: an unwritten element fails
    try:
        out, new_residual = torch.ops.diffusionlm.rms_norm(x, weight, EPS, residual)
    finally:
        torch.use_deterministic_algorithms(False)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out.double(), _definition(x, weight, residual), **TOLERANCE[dtype])
    ref_out, ref_residual = csrc.rms_norm_reference(x, weight, EPS, residual)
    torch.testing.assert_close(out, ref_out, rtol=2e-6 if dtype == torch.float32 else 8e-3, atol=1e-6)
    if residual is None:
        assert new_residual is None and ref_residual is None
    else:
        expected = (x.float() + residual.float()).to(dtype)
        assert torch.equal(new_residual, expected) and torch.equal(ref_residual, expected)


def test_non_contiguous_input(compiled):
    x, weight, residual = _inputs(64, torch.float32, torch.float32)
    x_t = x.transpose(0, 1)  # [5, 3, 64], not contiguous
    out, new_residual = csrc.rms_norm(x_t, weight, EPS, residual.transpose(0, 1))
    ref_out, ref_residual = csrc.rms_norm_reference(x_t, weight, EPS, residual.transpose(0, 1))
    torch.testing.assert_close(out, ref_out, rtol=2e-6, atol=1e-6)
    assert torch.equal(new_residual, ref_residual)


def test_bad_arguments_are_refused(compiled):
    x, weight, residual = _inputs(8, torch.bfloat16, torch.bfloat16)
    with pytest.raises(RuntimeError, match="weight must be"):
        torch.ops.diffusionlm.rms_norm(x, weight[:4], EPS, None)
    with pytest.raises(RuntimeError, match="weight must be float32 or x's dtype"):
        torch.ops.diffusionlm.rms_norm(x, weight.half(), EPS, None)
    with pytest.raises(RuntimeError, match="residual must match"):
        torch.ops.diffusionlm.rms_norm(x, weight, EPS, residual.float())


def _draw_args():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 50, generator=g)
    return logits, torch.randint(0, 2**32, (6,), generator=g), torch.randint(0, 2**32, (6,), generator=g)


def test_opcheck(compiled):
    """Schemas, fake kernels and AOT dispatch agree with the real kernels (torch.library.opcheck)."""
    x, weight, residual = _inputs(64, torch.bfloat16, torch.float32)
    logits, key0, key1 = _draw_args()
    cases = [
        (torch.ops.diffusionlm.rms_norm.default, (x, weight, EPS, None)),
        (torch.ops.diffusionlm.rms_norm.default, (x, weight, EPS, residual)),
        (torch.ops.diffusionlm.draw.default, (logits, key0, key1, 0.7, 1, 2)),
        (torch.ops.diffusionlm.draw.default, (logits.half(), key0, key1, 0.0, 1, 2)),
        (torch.ops.diffusionlm.uniforms.default, (key0, key1, 9)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph(compiled):
    """Both ops inside one graph (no breaks), through the fake kernels; the same results as eager."""
    x, weight, residual = _inputs(64, torch.float32, torch.float32)
    logits, key0, key1 = _draw_args()

    def step(x, weight, residual, logits, key0, key1):
        out, new_residual = csrc.rms_norm(x, weight, EPS, residual)
        tokens, confidence = csrc.draw(logits * 2, key0, key1, 0.7, 1, 2)
        return out + 1, new_residual, tokens, confidence

    compiled_step = torch.compile(step, fullgraph=True, backend="aot_eager")
    for got, expected in zip(compiled_step(x, weight, residual, logits, key0, key1),
                             step(x, weight, residual, logits, key0, key1)):
        assert torch.equal(got, expected)


@pytest.mark.gpu
@pytest.mark.parametrize("width", [1, 7, 4097])
@pytest.mark.parametrize("dtype,weight_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32)])
def test_cuda_matches_definition(compiled, width, dtype, weight_dtype):
    """The CUDA kernel (built where a GPU and a toolkit are) against the float64 definition."""
    if "cuda" not in csrc._ensure_state().devices:
        pytest.skip("the library was built without its CUDA kernels")
    x, weight, residual = _inputs(width, dtype, weight_dtype)
    out, new_residual = torch.ops.diffusionlm.rms_norm(x.cuda(), weight.cuda(), EPS, residual.cuda())
    torch.testing.assert_close(out.cpu().double(), _definition(x, weight, residual), **TOLERANCE[dtype])
    assert torch.equal(new_residual.cpu(), (x.float() + residual.float()).to(dtype))
