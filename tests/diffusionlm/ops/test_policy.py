"""`[kernels]` resolved into a KernelPolicy on a CPU device: what each setting becomes, and which settings
are refused (naming the setting) because their kernel cannot run here."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from config.kernels import KernelsConfig
from diffusionlm.ops import PYTORCH, KernelPolicy, KernelUnavailable, quack_mlp, resolve_kernels
from diffusionlm.ops import policy as policy_module

# the module, not the function of the same name that diffusionlm.ops exports
attention_module = importlib.import_module("diffusionlm.ops.attention")

CPU = torch.device("cpu")


def test_defaults_resolve_to_the_pytorch_policy_on_cpu():
    """`auto` everywhere: no Triton for CPU tensors, SDPA, the PyTorch MLP, and the default thresholds."""
    # csrc off: whether `auto` finds the compiled ops depends on what this process built (test_csrc_*.py)
    assert resolve_kernels(KernelsConfig(csrc="off"), CPU) == PYTORCH
    assert resolve_kernels(KernelsConfig(csrc="off"), "cpu") == PYTORCH  # a device name will do
    assert resolve_kernels(KernelsConfig(triton="off", attention="sdpa", mlp="pytorch", csrc="off"), CPU) == PYTORCH


def test_interpret_resolves_to_the_interpreter_and_the_triton_mlp(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # what tests/conftest.py chose before Triton was imported
    kernels = resolve_kernels(KernelsConfig(triton="interpret", csrc="off"), CPU)
    assert kernels == KernelPolicy(triton="interpret", attention="sdpa", mlp="triton")
    assert kernels.uses_triton(torch.zeros(1))
    assert resolve_kernels(KernelsConfig(triton="interpret", mlp="pytorch"), CPU).mlp == "pytorch"


def test_interpret_is_refused_once_triton_was_imported_without_it(monkeypatch):
    """Triton picks the interpreter when first imported: setting the variable later would change nothing."""
    import triton  # noqa: F401

    assert "triton" in sys.modules
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(KernelUnavailable, match=r"kernels\.triton = 'interpret' needs TRITON_INTERPRET=1"):
        resolve_kernels(KernelsConfig(triton="interpret"), CPU)


def test_triton_on_is_refused_on_cpu():
    with pytest.raises(KernelUnavailable, match=r"kernels\.triton = 'on' needs a CUDA device"):
        resolve_kernels(KernelsConfig(triton="on"), CPU)


def test_fa4_is_refused_on_cpu():
    with pytest.raises(KernelUnavailable, match=r"kernels\.attention = 'fa4' needs a Hopper GPU"):
        resolve_kernels(KernelsConfig(attention="fa4"), CPU)


@pytest.mark.parametrize("triton", ["auto", "off", "interpret"])
def test_quack_is_refused_on_cpu(triton, monkeypatch):
    """Without Triton kernels (auto and off, on a CPU) or without a Hopper GPU (interpret)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(KernelUnavailable, match=r"kernels\.mlp = 'quack' needs a Hopper GPU"):
        resolve_kernels(KernelsConfig(triton=triton, mlp="quack"), CPU)


@pytest.mark.parametrize("triton", ["auto", "off"])
def test_triton_mlp_is_refused_without_triton_kernels(triton):
    with pytest.raises(KernelUnavailable, match=r"kernels\.mlp = 'triton' needs Triton kernels"):
        resolve_kernels(KernelsConfig(triton=triton, mlp="triton"), CPU)


def test_refusals_are_value_errors():
    """A run's config checks report them like any other invalid setting."""
    with pytest.raises(ValueError, match=r"kernels\.triton"):
        resolve_kernels(KernelsConfig(triton="on"), CPU)


def test_explicit_thresholds_are_carried_under_auto():
    kernels = resolve_kernels(KernelsConfig(fa4_min_scores=12345, quack_min_gate_up=678, csrc="off"), CPU)
    assert kernels == KernelPolicy(fa4_min_scores=12345, quack_min_gate_up=678)


def test_forced_choices_run_from_any_size(monkeypatch):
    """`fa4` and `quack` are required, so their thresholds resolve to 0, while `auto` keeps the configured one.
    The hardware checks are stood in for: no CPU has a Hopper GPU's kernels."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(attention_module, "FA4_INSTALLED", True)
    monkeypatch.setattr(policy_module, "is_hopper", lambda device: True)
    monkeypatch.setattr(quack_mlp, "quack_mlp_available", lambda device, warn=True: True)
    cfg = dict(fa4_min_scores=12345, quack_min_gate_up=678)
    assert resolve_kernels(KernelsConfig(csrc="off", **cfg), CPU) == KernelPolicy(attention="fa4", **cfg)
    forced = resolve_kernels(KernelsConfig(attention="fa4", triton="interpret", mlp="quack", csrc="off", **cfg), CPU)
    assert forced == KernelPolicy(triton="interpret", attention="fa4", mlp="quack", fa4_min_scores=0,
                                  quack_min_gate_up=0)
    # `auto` takes quack only with Triton on, which a CPU device never resolves to
    assert resolve_kernels(KernelsConfig(triton="interpret", **cfg), CPU).mlp == "triton"


def test_record_is_a_plain_dict_of_the_six_settings():
    record = KernelPolicy(triton="interpret", mlp="triton", fa4_min_scores=7).record()
    assert type(record) is dict
    assert record == {"triton": "interpret", "attention": "sdpa", "mlp": "triton", "fa4_min_scores": 7,
                      "quack_min_gate_up": 150_000_000, "csrc": "off"}
    assert KernelPolicy(**record) == KernelPolicy(triton="interpret", mlp="triton", fa4_min_scores=7)
