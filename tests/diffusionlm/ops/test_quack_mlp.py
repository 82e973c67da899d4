"""The MLP through quack's gated products (Hopper with quack installed) and the checks that choose it."""

from __future__ import annotations

import pytest
import torch

import diffusionlm.ops as ops
from diffusionlm.ops import quack_mlp


def test_interleave_pairs_gate_and_up_rows():
    weight = torch.arange(8 * 3, dtype=torch.float32).view(8, 3)  # hidden 4: gate rows 0-3, up rows 4-7
    interleaved = quack_mlp.interleave_gate_up(weight)
    assert torch.equal(interleaved[0::2], weight[:4]) and torch.equal(interleaved[1::2], weight[4:])


def test_setting_is_validated_and_cpu_never_takes_the_path(monkeypatch):
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    monkeypatch.setenv("DIFFUSIONLM_MLP", "cutlass")
    with pytest.raises(ValueError, match=r"DIFFUSIONLM_MLP='cutlass': expected one of auto, triton"):
        quack_mlp.quack_mlp_available(x.device)
    monkeypatch.setenv("DIFFUSIONLM_MLP", "auto")
    assert not quack_mlp.quack_mlp_enabled(x, 32)
    assert ops.training_mlp_path(torch.device("cpu"), 4, 16, 32, torch.bfloat16) == "pytorch"


def test_where_quack_pays():
    rows = 64 * 1024
    assert quack_mlp.quack_mlp_pays(rows, 768, 2048, torch.bfloat16)  # base
    assert quack_mlp.quack_mlp_pays(rows, 512, 1408, torch.bfloat16)  # medium
    assert not quack_mlp.quack_mlp_pays(rows, 384, 1024, torch.bfloat16)  # small: measured slower
    assert not quack_mlp.quack_mlp_pays(rows, 768, 2048, torch.float32)
    assert not quack_mlp.quack_mlp_pays(rows, 770, 2048, torch.bfloat16)  # rows not 16-byte multiples


def test_cache_key_shim_keys_refused_values_by_identity():
    identity = pytest.importorskip("quack.gemm_runtime.identity", reason="needs quack's cache-key module")
    import contextvars

    quack_mlp._accept_dsl_internals_in_cache_keys()
    quack_mlp._accept_dsl_internals_in_cache_keys()  # idempotent: one wrapper
    key = identity.semantic_value_key
    a, b = contextvars.ContextVar("loc"), contextvars.ContextVar("loc")
    assert key(a, set()) == key(a, set()) != key(b, set())  # never shared between objects
    assert key(3, set()) == key(3, set())  # values quack has a rule for keep it


needs_quack = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9 and quack_mlp.QUACK_INSTALLED),
    reason="quack's path runs on Hopper GPUs with quack installed")


def _inputs(rows: int = 300, d: int = 64, hidden: int = 96):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, d, generator=gen)
    gate_up_w, down_w = 0.2 * torch.randn(2 * hidden, d, generator=gen), 0.2 * torch.randn(d, hidden, generator=gen)
    grad = torch.randn(rows, d, generator=gen)
    return [t.to("cuda", torch.bfloat16) for t in (x, gate_up_w, down_w, grad)]


def _run(fn, x, gate_up_w, down_w, grad):
    leaves = [t.clone().requires_grad_() for t in (x, gate_up_w, down_w)]
    y = fn(*leaves)
    y.backward(grad)
    return [y] + [t.grad for t in leaves]


def _check_against_the_composition(compiled: bool) -> None:
    import os

    os.environ["DIFFUSIONLM_MLP"] = "auto"
    quack_mlp.QUACK_MIN_GATE_UP = 0  # a small shape, to compare against fp64
    inputs = _inputs()
    assert quack_mlp.quack_mlp_enabled(inputs[0], 96)
    fn = torch.compile(ops.swiglu_mlp, fullgraph=True) if compiled else ops.swiglu_mlp
    ours = _run(fn, *inputs)
    exact = _run(ops.swiglu_mlp_reference, *[t.double().cpu() for t in inputs])
    plain = _run(ops.swiglu_mlp_reference, *[t.float() for t in inputs])  # one rounding to bf16 per step
    for o, p, e in zip(ours, plain, exact):
        assert o.dtype == torch.bfloat16
        err, ref_err = (o.double().cpu() - e).abs().max().item(), (p.double().cpu() - e).abs().max().item()
        assert err <= 3 * ref_err + 1e-2 * e.abs().max().item()
    assert "quack" in ops.training_mlp_path(inputs[0].device, 300, 64, 96, torch.bfloat16)


@needs_quack
@pytest.mark.parametrize("compiled", [False, True])
def test_quack_mlp_matches_the_composition(compiled):
    # In a process of its own: once quack's kernels have run, Triton's TMA descriptors fail in that process
    # ("invalid device context"), which would break later tests of the Triton MLP kernel.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, __file__, str(int(compiled))], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


if __name__ == "__main__":
    import sys

    _check_against_the_composition(compiled=sys.argv[1] == "1")
