"""The MLP through quack's gated products (Hopper with quack installed) and the checks that choose it."""

from __future__ import annotations

import importlib.util
import warnings
from importlib.metadata import PackageNotFoundError, version

import pytest
import torch

import diffusionlm.ops as ops
from diffusionlm.ops import quack_mlp


def test_interleave_pairs_gate_and_up_rows():
    weight = torch.arange(8 * 3, dtype=torch.float32).view(8, 3)  # hidden 4: gate rows 0-3, up rows 4-7
    interleaved = quack_mlp.interleave_gate_up(weight)
    assert torch.equal(interleaved[0::2], weight[:4]) and torch.equal(interleaved[1::2], weight[4:])


def test_cpu_never_takes_the_path():
    cpu = torch.device("cpu")
    assert not quack_mlp.quack_mlp_available(cpu)
    assert ops.training_mlp_path(ops.PYTORCH, cpu, 4, 16, 32, torch.bfloat16) == "pytorch"
    # even a policy that asks for quack (resolved on a Hopper GPU) runs PyTorch's MLP on a CPU device
    quack = ops.KernelPolicy(triton="on", mlp="quack", quack_min_gate_up=0)
    assert ops.training_mlp_path(quack, cpu, 64 * 1024, 768, 2048, torch.bfloat16) == "pytorch"


def test_where_quack_pays():
    rows, min_gate_up = 64 * 1024, ops.KernelPolicy().quack_min_gate_up  # the default: 150M
    assert quack_mlp.quack_mlp_pays(rows, 768, 2048, torch.bfloat16, min_gate_up)  # base
    assert quack_mlp.quack_mlp_pays(rows, 512, 1408, torch.bfloat16, min_gate_up)  # medium
    assert not quack_mlp.quack_mlp_pays(rows, 384, 1024, torch.bfloat16, min_gate_up)  # small: measured slower
    assert not quack_mlp.quack_mlp_pays(rows, 768, 2048, torch.float32, 0)
    assert not quack_mlp.quack_mlp_pays(rows, 770, 2048, torch.bfloat16, 0)  # rows not 16-byte multiples


def test_quack_pays_from_the_given_number_of_gate_up_elements():
    gate_up = 300 * 2 * 96
    assert quack_mlp.quack_mlp_pays(300, 64, 96, torch.bfloat16, 0)  # a forced `quack` resolves to 0
    assert quack_mlp.quack_mlp_pays(300, 64, 96, torch.bfloat16, gate_up)
    assert not quack_mlp.quack_mlp_pays(300, 64, 96, torch.bfloat16, gate_up + 1)


@pytest.mark.skipif(quack_mlp.QUACK_INSTALLED, reason="quack is installed here")
def test_without_quack_the_path_is_unavailable_and_nothing_warns(monkeypatch):
    """No quack: no warning (the warning is for a quack that is installed but not the pinned, importable pair),
    even where the GPU would be a Hopper one."""
    assert importlib.util.find_spec("quack") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not quack_mlp.quack_mlp_available(torch.device("cpu"))
        monkeypatch.setattr(quack_mlp, "is_hopper", lambda device: True)
        assert not quack_mlp.quack_mlp_available(torch.device("cuda"))  # a device name; no GPU is touched


def _installed(distribution: str) -> bool:
    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(any(_installed(d) for d in quack_mlp.QUACK_PIN), reason="part of quack's pair is installed")
def test_unpinned_names_the_pinned_versions_when_they_are_not_installed():
    reason = quack_mlp._unpinned()
    assert reason is not None
    assert "found quack-kernels not installed, nvidia-cutlass-dsl not installed" in reason
    assert "quack-kernels==0.6.5" in reason and "nvidia-cutlass-dsl==4.8.1" in reason


def test_unpinned_accepts_only_the_pinned_pair(monkeypatch):
    """The versions installed (read through importlib.metadata) must be exactly the pin."""
    installed = dict(quack_mlp.QUACK_PIN)
    monkeypatch.setattr(quack_mlp, "version", lambda distribution: installed[distribution])
    assert quack_mlp._unpinned() is None
    installed["nvidia-cutlass-dsl"] = "4.7.1"
    reason = quack_mlp._unpinned()
    assert reason is not None and "nvidia-cutlass-dsl 4.7.1" in reason and "nvidia-cutlass-dsl==4.8.1" in reason


def test_an_unpinned_quack_is_not_used_and_warns_once(monkeypatch):
    """An installed quack of another pair than the pin takes the Triton path: one warning per process, naming the
    versions found and the pinned ones."""
    monkeypatch.setattr(quack_mlp, "QUACK_INSTALLED", True)
    monkeypatch.setattr(quack_mlp, "is_hopper", lambda device: True)
    monkeypatch.setattr(quack_mlp, "version", {"quack-kernels": "0.6.5", "nvidia-cutlass-dsl": "4.7.1"}.get)
    quack_mlp._import_failure.cache_clear()
    monkeypatch.setattr(quack_mlp, "_warned", [])
    try:
        found_and_pinned = r"not used: found .*nvidia-cutlass-dsl 4\.7\.1.*nvidia-cutlass-dsl==4\.8\.1"
        with pytest.warns(UserWarning, match=found_and_pinned):
            assert not quack_mlp.quack_mlp_available(torch.device("cuda"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not quack_mlp.quack_mlp_available(torch.device("cuda"))  # checked once per process
    finally:
        quack_mlp._import_failure.cache_clear()  # the next caller checks the real packages


needs_quack = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9 and quack_mlp.QUACK_INSTALLED
         and quack_mlp._unpinned() is None),
    reason="quack's path runs on Hopper GPUs with the pinned quack installed")


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
    from config.kernels import KernelsConfig

    inputs = _inputs()
    kernels = ops.resolve_kernels(KernelsConfig(mlp="quack"), inputs[0].device)
    assert kernels.mlp == "quack" and kernels.quack_min_gate_up == 0  # required: from any size, so this small one
    fn = torch.compile(ops.swiglu_mlp, fullgraph=True) if compiled else ops.swiglu_mlp
    ours = _run(lambda *leaves: fn(*leaves, kernels=kernels), *inputs)
    exact = _run(ops.swiglu_mlp_reference, *[t.double().cpu() for t in inputs])
    plain = _run(ops.swiglu_mlp_reference, *[t.float() for t in inputs])  # one rounding to bf16 per step
    for o, p, e in zip(ours, plain, exact):
        assert o.dtype == torch.bfloat16
        err, ref_err = (o.double().cpu() - e).abs().max().item(), (p.double().cpu() - e).abs().max().item()
        assert err <= 3 * ref_err + 1e-2 * e.abs().max().item()
    assert "quack" in ops.training_mlp_path(kernels, inputs[0].device, 300, 64, 96, torch.bfloat16)


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
